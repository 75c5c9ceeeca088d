//! Tests only: `kernels.cu` compiled for the host by the system C++ compiler (through `emu.h`)
//! and loaded with dlopen, behind the same [`Gpu`] trait as a real device, so that the device
//! step (`step.rs`) runs here, in the default build, against the CPU implementation.
//!
//! Products run as plain loops (in k order, no FMA); buffers are host memory. Without a C++
//! compiler (`c++`, or `$CXX`) the tests that need it skip with a message, except under
//! `CI=true`, where they fail.

use super::step::{with_arg_ptrs, Buf, Gemm, Gpu, Op};
use super::{EMU_HEADER, K, KERNELS, SOURCE};
use anyhow::Result;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::OnceLock;

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    *mut *mut c_void,
    *mut c_char,
    c_int,
) -> c_int;

struct Lib {
    launch: LaunchFn,
    names: Vec<CString>,
}

/// Compile the kernels for the host once per test process.
fn lib() -> &'static Result<Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(build)
}

fn build() -> Result<Lib, String> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let mut driver = String::from("#include \"emu.h\"\n#include \"kernels.cu\"\n");
    for (_, name, barrier) in KERNELS {
        driver.push_str(&format!("EMU_KERNEL({name}, {barrier})\n"));
    }
    for (f, text) in [
        ("emu.h", EMU_HEADER),
        ("kernels.cu", SOURCE),
        ("driver.cpp", driver.as_str()),
    ] {
        std::fs::write(dir.path().join(f), text).map_err(|e| format!("writing {f}: {e}"))?;
    }
    let so = dir.path().join("libseqpipe_kernels_emu.so");
    let out = std::process::Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-shared",
            "-fPIC",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-pthread",
            "-Wall",
            "-o",
        ])
        .arg(&so)
        .arg(dir.path().join("driver.cpp"))
        .output()
        .map_err(|e| format!("cannot run the C++ compiler `{cxx}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cxx}` failed on kernels.cu through emu.h:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = CString::new(so.to_str().ok_or("non-UTF-8 temp path")?).unwrap();
    // SAFETY: a library we just built; its initialisers only fill the kernel table.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err("dlopen of the emulated kernels failed".into());
    }
    // SAFETY: symbol lookup in the library above.
    let sym = unsafe { libc::dlsym(h, c"emu_launch".as_ptr()) };
    if sym.is_null() {
        return Err("emu_launch not found in the emulated kernels".into());
    }
    // SAFETY: emu_launch has exactly this signature (emu.h). The library stays loaded.
    let launch: LaunchFn = unsafe { std::mem::transmute::<*mut c_void, LaunchFn>(sym) };
    // The loaded library stays mapped: its files can go.
    drop(dir);
    Ok(Lib {
        launch,
        names: KERNELS
            .iter()
            .map(|(_, n, _)| CString::new(*n).unwrap())
            .collect(),
    })
}

/// The host emulation, or None (after saying why) when no C++ compiler is at hand outside CI.
pub(in crate::nn) fn gpu_or_skip(test: &str) -> Option<EmuGpu> {
    match lib() {
        Ok(lib) => Some(EmuGpu {
            lib,
            block: 32,
            graphs: true,
            replay_fails: false,
        }),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: the host-emulated CUDA kernels are needed under CI=true: {e}");
            }
            eprintln!("SKIPPED {test}: host-emulated CUDA kernels unavailable: {e}");
            None
        }
    }
}

#[derive(Clone, Copy)]
pub(in crate::nn) struct EmuGpu {
    lib: &'static Lib,
    /// Threads per block of the element-wise kernels (tests vary it).
    pub block: u32,
    /// Record graphs (a graph here is the list of operations, replayed in order).
    pub graphs: bool,
    /// Graph launches fail (as a device that cannot launch them would, running nothing).
    pub replay_fails: bool,
}

/// Host memory standing in for device memory (8-byte aligned, zeroed).
pub(in crate::nn) struct EmuBuf {
    ptr: *mut u64,
    words: usize,
    bytes: usize,
}
impl EmuBuf {
    fn new(bytes: usize) -> Self {
        let words = bytes.div_ceil(8).max(1);
        let b: Box<[u64]> = vec![0u64; words].into_boxed_slice();
        Self {
            ptr: Box::into_raw(b) as *mut u64,
            words,
            bytes,
        }
    }
}
impl Drop for EmuBuf {
    fn drop(&mut self) {
        // SAFETY: from Box::into_raw of a boxed slice of `words` u64.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr, self.words,
            )))
        };
    }
}
impl Clone for EmuBuf {
    fn clone(&self) -> Self {
        let n = Self::new(self.bytes);
        // SAFETY: both hold `words` u64.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, n.ptr, self.words) };
        n
    }
}
impl Buf for EmuBuf {
    fn ptr(&self) -> u64 {
        self.ptr as u64
    }
    fn write(&mut self, off: usize, src: &[u8]) -> Result<()> {
        if off + src.len() > self.bytes {
            nn_bail!(Device, "emu write out of bounds");
        }
        // SAFETY: in bounds (checked).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), (self.ptr as *mut u8).add(off), src.len())
        };
        Ok(())
    }
    fn read(&self, off: usize, dst: &mut [u8]) -> Result<()> {
        if off + dst.len() > self.bytes {
            nn_bail!(Device, "emu read out of bounds");
        }
        // SAFETY: in bounds (checked).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.ptr as *const u8).add(off),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }
}

impl Gpu for EmuGpu {
    type Buf = EmuBuf;
    type Graph = Vec<Op>;
    fn bind(&self) -> Result<()> {
        Ok(())
    }
    fn alloc(&self, bytes: usize) -> Result<EmuBuf> {
        Ok(EmuBuf::new(bytes))
    }
    fn run(&self, op: &Op) -> Result<()> {
        match op {
            Op::Launch {
                k,
                grid,
                block,
                args,
            } => with_arg_ptrs(args, |ptrs| self.launch(*k, *grid, *block, ptrs)),
            Op::Gemm(g) => self.gemm(g),
            Op::Copy { dst, src, bytes } => self.copy(*dst, *src, *bytes),
            Op::Zero { dst, bytes } => self.zero_bytes(*dst, *bytes),
        }
    }
    fn block(&self) -> u32 {
        self.block
    }
    fn reduce_blocks(&self) -> u32 {
        3
    }
    fn record(&self, prog: &[Op]) -> Result<Option<Vec<Op>>> {
        Ok(self.graphs.then(|| prog.to_vec()))
    }
    fn replay(&self, graph: &Vec<Op>) -> Result<()> {
        if self.replay_fails {
            nn_bail!(Device, "emulated: graph launches fail");
        }
        graph.iter().try_for_each(|op| self.run(op))
    }
}

/// The operations, one at a time on the host.
impl EmuGpu {
    fn launch(&self, k: K, grid: u32, block: u32, params: &mut [*mut c_void]) -> Result<()> {
        let mut err = [0 as c_char; 512];
        // SAFETY: the parameters point at values of the kernel's parameter types (step.rs and
        // the tests build them so); the kernels touch only the buffers passed in.
        let rc = unsafe {
            (self.lib.launch)(
                self.lib.names[k as usize].as_ptr(),
                grid,
                1,
                1,
                block,
                1,
                1,
                params.as_mut_ptr(),
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if rc != 0 {
            // SAFETY: emu_launch wrote a NUL-terminated message.
            let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
            nn_bail!(
                Device,
                "emulated launch of {}: {}",
                k.name(),
                msg.to_string_lossy()
            );
        }
        Ok(())
    }
    fn gemm(&self, g: &Gemm) -> Result<()> {
        let (a, b, c) = (g.a as *const f32, g.b as *const f32, g.c as *mut f32);
        for i in 0..g.m {
            for j in 0..g.n {
                let mut acc = 0.0f32;
                for p in 0..g.k {
                    // SAFETY: the step passes buffers of these shapes.
                    let (x, y) = unsafe {
                        (
                            *a.add(if g.ta { p * g.lda + i } else { i * g.lda + p }),
                            *b.add(if g.tb { j * g.ldb + p } else { p * g.ldb + j }),
                        )
                    };
                    acc += x * y;
                }
                // SAFETY: as above.
                unsafe { *c.add(i * g.ldc + j) = acc };
            }
        }
        Ok(())
    }
    fn copy(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: addresses of live EmuBufs, in bounds (the step's layout).
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }
    fn zero_bytes(&self, dst: u64, bytes: usize) -> Result<()> {
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(dst as *mut u8, 0, bytes) };
        Ok(())
    }
}

/// Test helpers: upload, download, launch with `Arg`s.
impl EmuGpu {
    pub fn up(&self, v: &[f32]) -> EmuBuf {
        let mut b = EmuBuf::new(4 * v.len());
        b.write(0, super::step::f32_bytes(v)).unwrap();
        b
    }
    pub fn up_i32(&self, v: &[i32]) -> EmuBuf {
        let mut b = EmuBuf::new(4 * v.len());
        // SAFETY: i32 has no padding.
        let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, 4 * v.len()) };
        b.write(0, bytes).unwrap();
        b
    }
    pub fn down(&self, b: &EmuBuf, n: usize) -> Vec<f32> {
        let mut v = vec![0.0f32; n];
        b.read(0, super::step::f32_bytes_mut(&mut v)).unwrap();
        v
    }
    pub fn down_f64(&self, b: &EmuBuf, n: usize) -> Vec<f64> {
        let mut v = vec![0.0f64; n];
        // SAFETY: f64 has no padding; every bit pattern is valid.
        let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, 8 * n) };
        b.read(0, bytes).unwrap();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::super::step::{Counts, Moments, Trainer};
    use super::*;
    use crate::nn::core::to_time_major;
    use crate::nn::params::Update;
    use crate::nn::{
        Activation, CellKind, DeviceKind, InputMode, LanguageModel, LmSpec, OptimSpec, Optimizer,
    };
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    struct Case {
        cell: CellKind,
        act: Activation,
        input: InputMode,
        layers: usize,
        opt: OptimSpec,
        clip: Option<f32>,
    }

    fn sgd(lr: f32) -> OptimSpec {
        OptimSpec::Sgd {
            lr,
            weight_decay: 0.0,
        }
    }
    fn adam() -> OptimSpec {
        OptimSpec::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-3,
        }
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * (1.0 + b.abs())
    }

    /// `steps` training steps on the CPU path and on the emulated device step, from the same
    /// weights and data; losses, gradient norms, final weights and final states must agree to
    /// the products' summation order (the CPU's products use FMA, the emulation's do not).
    fn cpu_vs_device(case: &Case, steps: usize, b: usize, t: usize) {
        let Some(gpu) = gpu_or_skip("cpu_vs_device") else {
            return;
        };
        let vocab = 7;
        let spec = LmSpec {
            cell: case.cell,
            vocab,
            hidden: 5,
            num_layers: case.layers,
            input: case.input,
            activation: case.act,
        };
        let what = format!(
            "{:?}/{:?}/{:?}/{} layers/{:?}/clip {:?}",
            case.cell, case.act, case.input, case.layers, case.opt, case.clip
        );
        let mut cpu = LanguageModel::new(&spec, DeviceKind::Cpu, 3).unwrap();
        let mut core = cpu.core().clone();
        let mut opt_cpu = Optimizer::new(&case.opt, &cpu);
        let mut opt_dev = Optimizer::new(&case.opt, &cpu);
        let mut tr = Trainer::new(gpu, &core).unwrap();
        let mut moments: Option<Moments<EmuBuf>> = None;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut st_cpu = cpu.zero_state(b);
        let mut st_dev = cpu.zero_state(b);
        for i in 0..steps {
            let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..vocab as u32)).collect();
            let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..vocab as u32)).collect();
            let s_cpu = cpu
                .train_step(&mut opt_cpu, &x, &y, b, t, &mut st_cpu, case.clip)
                .unwrap();
            let upd = opt_dev.next_update(&core.store.lens()).unwrap();
            if matches!(upd, Update::Adam { .. }) && moments.is_none() {
                let (m, v) = opt_dev.host_moments();
                moments = Some(tr.moments_from_host(m, v).unwrap());
            }
            let (xt, yt) = (to_time_major(&x, b, t), to_time_major(&y, b, t));
            let s_dev = tr
                .step(
                    &core,
                    upd,
                    moments.as_mut(),
                    &xt,
                    &yt,
                    b,
                    t,
                    &mut st_dev,
                    case.clip,
                )
                .unwrap();
            assert!(st_dev.on_device.is_some(), "{what}: state not tagged");
            assert_eq!(s_dev.tokens, s_cpu.tokens);
            assert!(
                close(s_dev.loss_sum, s_cpu.loss_sum, 1e-5),
                "{what} step {i}: loss {} vs cpu {}",
                s_dev.loss_sum,
                s_cpu.loss_sum
            );
            assert!(
                close(s_dev.grad_norm as f64, s_cpu.grad_norm as f64, 1e-4),
                "{what} step {i}: grad norm {} vs cpu {}",
                s_dev.grad_norm,
                s_cpu.grad_norm
            );
        }
        // The first step ran one by one; the second recorded the program as a graph, and it
        // and every later step replayed it (the per-step values come from device memory).
        assert_eq!(
            tr.counts,
            Counts {
                one_by_one: 1,
                recorded: 1,
                replayed: steps as u64 - 1
            },
            "{what}: graph use"
        );
        // Weights: the device's, brought back, against the CPU's.
        tr.download_params(&mut core.store).unwrap();
        let mut moved = 0.0f64;
        for (k, (d, c)) in core
            .store
            .params
            .iter()
            .zip(&cpu.core().store.params)
            .enumerate()
        {
            for (j, (&a, &e)) in d.data.iter().zip(&c.data).enumerate() {
                assert!(
                    close(a as f64, e as f64, 1e-4),
                    "{what}: param {k}[{j}] device {a} vs cpu {e}"
                );
            }
            moved += d.data.len() as f64;
        }
        assert!(moved > 0.0);
        // The weights did change (the test would pass trivially otherwise).
        let init = LanguageModel::new(&spec, DeviceKind::Cpu, 3).unwrap();
        let changed = core
            .store
            .params
            .iter()
            .zip(&init.core().store.params)
            .any(|(a, b)| a.data != b.data);
        assert!(changed, "{what}: no weight moved");
        // State: bring the device state back and compare.
        assert!(tr.pull_state(&mut st_dev).unwrap());
        assert_eq!(st_dev.on_device, None);
        for (l, (d, c)) in st_dev.h.iter().zip(&st_cpu.h).enumerate() {
            for (&a, &e) in d.iter().zip(c) {
                assert!(
                    close(a as f64, e as f64, 1e-4),
                    "{what}: state h{l} {a} vs {e}"
                );
            }
        }
        if let (Some(dc), Some(cc)) = (&st_dev.c, &st_cpu.c) {
            for (d, c) in dc.iter().zip(cc) {
                for (&a, &e) in d.iter().zip(c) {
                    assert!(
                        close(a as f64, e as f64, 1e-4),
                        "{what}: state c {a} vs {e}"
                    );
                }
            }
        }
        // Adam moments: the device's against the CPU optimizer's after the same steps.
        if let Some(mo) = &moments {
            let (m, v) = mo.download(&core.store.lens()).unwrap();
            let (mc, vc) = opt_cpu.host_moments();
            assert!(
                m.iter().flatten().any(|&x| x != 0.0),
                "{what}: Adam m still zero"
            );
            for (d, c) in m.iter().flatten().zip(mc.iter().flatten()) {
                assert!(
                    close(*d as f64, *c as f64, 1e-4),
                    "{what}: Adam m {d} vs {c}"
                );
            }
            for (d, c) in v.iter().flatten().zip(vc.iter().flatten()) {
                assert!(
                    close(*d as f64, *c as f64, 1e-4),
                    "{what}: Adam v {d} vs {c}"
                );
            }
        }
    }

    #[test]
    fn device_step_matches_cpu_rnn_scratch_and_rnn() {
        for case in [
            Case {
                cell: CellKind::RnnScratch,
                act: Activation::Tanh,
                input: InputMode::OneHot,
                layers: 1,
                opt: sgd(1.0),
                clip: Some(1.0),
            },
            Case {
                cell: CellKind::Rnn,
                act: Activation::Relu,
                input: InputMode::Embedding(4),
                layers: 2,
                opt: adam(),
                clip: None,
            },
            Case {
                cell: CellKind::Rnn,
                act: Activation::Tanh,
                input: InputMode::OneHot,
                layers: 3,
                opt: sgd(0.5),
                clip: Some(0.05),
            },
        ] {
            cpu_vs_device(&case, 4, 3, 4);
        }
    }

    #[test]
    fn device_step_matches_cpu_gru() {
        for case in [
            Case {
                cell: CellKind::Gru,
                act: Activation::Tanh,
                input: InputMode::OneHot,
                layers: 2,
                opt: sgd(1.0),
                clip: Some(1.0),
            },
            Case {
                cell: CellKind::Gru,
                act: Activation::Tanh,
                input: InputMode::Embedding(3),
                layers: 1,
                opt: adam(),
                clip: Some(0.1),
            },
        ] {
            cpu_vs_device(&case, 4, 2, 5);
        }
    }

    #[test]
    fn device_step_matches_cpu_lstm() {
        for case in [
            Case {
                cell: CellKind::Lstm,
                act: Activation::Tanh,
                input: InputMode::OneHot,
                layers: 1,
                opt: sgd(1.0),
                clip: None,
            },
            Case {
                cell: CellKind::Lstm,
                act: Activation::Tanh,
                input: InputMode::Embedding(4),
                layers: 3,
                opt: adam(),
                clip: Some(0.5),
            },
        ] {
            cpu_vs_device(&case, 3, 3, 3);
        }
    }

    fn small_lm(cell: CellKind) -> LanguageModel {
        let spec = LmSpec {
            cell,
            vocab: 6,
            hidden: 4,
            num_layers: 2,
            input: InputMode::OneHot,
            activation: Activation::Tanh,
        };
        LanguageModel::new(&spec, DeviceKind::Cpu, 5).unwrap()
    }

    /// The device state carries over between steps, a fresh host state replaces it, a pulled
    /// state continues from the host values, and the batch size may change.
    #[test]
    fn device_state_follows_the_host_state() {
        let Some(gpu) = gpu_or_skip("device_state_follows_the_host_state") else {
            return;
        };
        let mut cpu = small_lm(CellKind::Lstm);
        let core = cpu.core().clone();
        let spec = sgd(0.5);
        let (mut oc, mut od) = (Optimizer::new(&spec, &cpu), Optimizer::new(&spec, &cpu));
        let mut tr = Trainer::new(gpu, &core).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut sc, mut sd) = (cpu.zero_state(3), cpu.zero_state(3));
        // batch 3 twice (carried on the device), pull to host and go on (upload), then a fresh
        // state of batch 2 (new buffers), then batch 2 carried.
        for (i, (b, pull, fresh)) in [
            (3, false, false),
            (3, true, false),
            (3, false, false),
            (2, false, true),
            (2, false, false),
        ]
        .into_iter()
        .enumerate()
        {
            if fresh {
                sc = cpu.zero_state(b);
                sd = cpu.zero_state(b);
            }
            if pull {
                assert!(tr.pull_state(&mut sd).unwrap());
                assert_eq!(sd.on_device, None);
            }
            let t = 4;
            let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..6)).collect();
            let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..6)).collect();
            let a = cpu
                .train_step(&mut oc, &x, &y, b, t, &mut sc, None)
                .unwrap();
            let upd = od.next_update(&core.store.lens()).unwrap();
            let (xt, yt) = (to_time_major(&x, b, t), to_time_major(&y, b, t));
            let d = tr
                .step(&core, upd, None, &xt, &yt, b, t, &mut sd, None)
                .unwrap();
            assert!(
                close(d.loss_sum, a.loss_sum, 1e-5),
                "step {i}: {} vs {}",
                d.loss_sum,
                a.loss_sum
            );
        }
        // A copy of the state from before a later step is refused, with a clear message.
        let old = sd.clone();
        let b = 2;
        let x = vec![1u32; b * 4];
        let upd = od.next_update(&core.store.lens()).unwrap();
        tr.step(&core, upd, None, &x, &x, b, 4, &mut sd, None)
            .unwrap();
        let mut old = old;
        let e = tr.check(&core, &x, &x, b, 4, &old).unwrap_err();
        assert!(format!("{e}").contains("stale"), "{e}");
        assert!(!tr.pull_state(&mut old).unwrap());
        // reset() makes any state a fresh host state again.
        old.reset();
        tr.check(&core, &x, &x, b, 4, &old).unwrap();
    }

    /// A copy of a trainer (a cloned model) has the device weights, trains on as the original
    /// does, and refuses the original's device state.
    #[test]
    fn device_trainer_copy() {
        let Some(gpu) = gpu_or_skip("device_trainer_copy") else {
            return;
        };
        let lm = small_lm(CellKind::Gru);
        let core = lm.core().clone();
        let mut od = Optimizer::new(&sgd(1.0), &lm);
        let mut tr = Trainer::new(gpu, &core).unwrap();
        let (b, t) = (2, 3);
        let x: Vec<u32> = (0..6).map(|i| i % 5).collect();
        let mut st = lm.zero_state(b);
        for _ in 0..2 {
            let upd = od.next_update(&core.store.lens()).unwrap();
            tr.step(&core, upd, None, &x, &x, b, t, &mut st, Some(1.0))
                .unwrap();
        }
        let mut tc = tr.try_clone().unwrap();
        let (mut a, mut c) = (core.clone(), core.clone());
        tr.download_params(&mut a.store).unwrap();
        tc.download_params(&mut c.store).unwrap();
        assert!(a
            .store
            .params
            .iter()
            .zip(&c.store.params)
            .all(|(p, q)| p.data == q.data));
        assert!(a
            .store
            .params
            .iter()
            .zip(&core.store.params)
            .any(|(p, q)| p.data != q.data));
        let e = tc.check(&core, &x, &x, b, t, &st).unwrap_err();
        assert!(format!("{e}").contains("another model"), "{e}");
        let mut od2 = od.clone();
        let (mut s1, mut s2) = (lm.zero_state(b), lm.zero_state(b));
        let u1 = od.next_update(&core.store.lens()).unwrap();
        let u2 = od2.next_update(&core.store.lens()).unwrap();
        let r1 = tr
            .step(&core, u1, None, &x, &x, b, t, &mut s1, None)
            .unwrap();
        let r2 = tc
            .step(&core, u2, None, &x, &x, b, t, &mut s2, None)
            .unwrap();
        assert_eq!(r1, r2);
    }

    #[test]
    fn device_step_refuses_bad_input() {
        let Some(gpu) = gpu_or_skip("device_step_refuses_bad_input") else {
            return;
        };
        let lm = small_lm(CellKind::Gru);
        let core = lm.core().clone();
        let tr = Trainer::new(gpu, &core).unwrap();
        let st = lm.zero_state(2);
        let ok = vec![0u32; 6];
        let msg = |r: Result<()>| format!("{:#}", r.unwrap_err());
        assert!(msg(tr.check(&core, &[0, 9, 0, 0, 0, 0], &ok, 2, 3, &st)).contains("token 9"));
        assert!(msg(tr.check(&core, &ok, &[7, 0, 0, 0, 0, 0], 2, 3, &st)).contains("token 7"));
        assert!(msg(tr.check(&core, &ok[..5], &ok, 2, 3, &st)).contains("batch*steps"));
        assert!(msg(tr.check(&core, &ok, &ok, 3, 2, &st)).contains("hidden state"));
        let err = tr.check(&core, &ok, &ok, 2, 3, &st);
        assert!(err.is_ok(), "{err:?}");
        // A dense-input (series) core is not for this step.
        let score = crate::nn::core::Core::new(
            CellKind::Gru,
            Activation::Tanh,
            crate::nn::core::InKind::Dense(1),
            4,
            1,
            1,
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        let tr2 = Trainer::new(gpu, &score).unwrap();
        let st2 = score.zero_state(2);
        assert!(msg(tr2.check(&score, &ok, &ok, 2, 3, &st2)).contains("token models only"));
    }

    /// Parameters and Adam moments survive a round trip, and a step after new host weights
    /// (host_newer) starts from those.
    #[test]
    fn device_weights_round_trip() {
        let Some(gpu) = gpu_or_skip("device_weights_round_trip") else {
            return;
        };
        let lm = small_lm(CellKind::Rnn);
        let mut core = lm.core().clone();
        let tr = Trainer::new(gpu, &core).unwrap();
        let before = core.store.clone();
        for p in &mut core.store.params {
            p.data.iter_mut().for_each(|x| *x = f32::NAN);
        }
        tr.download_params(&mut core.store).unwrap();
        for (a, b) in core.store.params.iter().zip(&before.params) {
            assert_eq!(a.data, b.data);
        }
        let opt = Optimizer::new(&adam(), &lm);
        let (m, v) = opt.host_moments();
        let mut m2 = m.to_vec();
        m2[1][2] = 0.25;
        let mo = tr.moments_from_host(&m2, v).unwrap();
        let (dm, dv) = mo.download(&core.store.lens()).unwrap();
        assert_eq!(dm, m2);
        assert_eq!(dv, v.to_vec());
        assert!(mo.download(&[1, 2]).is_err());
        let bad: Vec<Vec<f32>> = vec![vec![0.0; 3]];
        assert!(tr.moments_from_host(&bad, &bad).is_err());
    }

    /// A step replayed from a recorded graph gives the bits of the same step launched one by
    /// one, with the optimizer's per-step values (Adam's bias corrections) changing under it;
    /// a new shape or clipping threshold makes a new program, run one by one and recorded anew;
    /// a graph launch that fails leaves the model to go on one by one with the same bits.
    #[test]
    fn graphs_replay_the_bits_of_one_by_one() {
        let Some(gpu) = gpu_or_skip("graphs_replay_the_bits_of_one_by_one") else {
            return;
        };
        let vocab = 6;
        let spec = LmSpec {
            cell: CellKind::Lstm,
            vocab,
            hidden: 4,
            num_layers: 2,
            input: InputMode::Embedding(3),
            activation: Activation::Tanh,
        };
        let model = LanguageModel::new(&spec, DeviceKind::Cpu, 5).unwrap();
        let b = 2;
        // (steps, clip) of each step; the batch stays 2, so the state carries over.
        let plan = [
            (3, None),
            (3, None),
            (3, None),
            (4, None),
            (4, None),
            (4, Some(0.3)),
            (4, Some(0.3)),
            (4, Some(0.3)),
        ];
        let run = |graphs: bool, replay_fails: bool| {
            let gpu = EmuGpu {
                graphs,
                replay_fails,
                ..gpu
            };
            let mut core = model.core().clone();
            let mut opt = Optimizer::new(&adam(), &model);
            let mut tr = Trainer::new(gpu, &core).unwrap();
            let mut st = model.zero_state(b);
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let mut moments: Option<Moments<EmuBuf>> = None;
            let mut seen = Vec::new();
            for &(t, clip) in &plan {
                let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..vocab as u32)).collect();
                let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..vocab as u32)).collect();
                let upd = opt.next_update(&core.store.lens()).unwrap();
                if moments.is_none() {
                    let (m, v) = opt.host_moments();
                    moments = Some(tr.moments_from_host(m, v).unwrap());
                }
                let s = tr
                    .step(&core, upd, moments.as_mut(), &x, &y, b, t, &mut st, clip)
                    .unwrap();
                seen.push((s.loss_sum.to_bits(), s.grad_norm.to_bits()));
            }
            tr.download_params(&mut core.store).unwrap();
            let w: Vec<u32> = core
                .store
                .params
                .iter()
                .flat_map(|p| p.data.iter().map(|v| v.to_bits()))
                .collect();
            (seen, w, tr.counts)
        };
        let (seen_g, w_g, counts_g) = run(true, false);
        let (seen_1, w_1, counts_1) = run(false, false);
        // A device whose graph launches fail: the step goes on one by one, nothing lost.
        let (seen_f, w_f, counts_f) = run(true, true);
        assert_eq!(
            seen_f, seen_1,
            "losses and norms after a failed graph launch"
        );
        assert_eq!(w_f, w_1, "weights after a failed graph launch");
        assert_eq!(
            counts_f,
            Counts {
                one_by_one: 8,
                recorded: 1,
                replayed: 0
            }
        );
        assert_eq!(seen_g, seen_1, "losses and norms, graphs vs one by one");
        assert_eq!(w_g, w_1, "weights, graphs vs one by one");
        assert_ne!(
            w_g,
            model
                .core()
                .store
                .params
                .iter()
                .flat_map(|p| p.data.iter().map(|v| v.to_bits()))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            counts_1,
            Counts {
                one_by_one: 8,
                recorded: 0,
                replayed: 0
            }
        );
        assert_eq!(
            counts_g,
            Counts {
                one_by_one: 3,
                recorded: 3,
                replayed: 5
            }
        );
    }
}
