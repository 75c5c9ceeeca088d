//! A real Slurm cluster (scripts/slurm-up.sh; `.ci/run` starts one). Without one these tests
//! skip and say why, except under CI=true, where they fail. The slow-controller test needs no
//! cluster: a stand-in `sbatch` plays the controller.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Output};

fn slurm(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("SEQPIPE_SLURM_POLL", "0.2")
        .output()
        .unwrap()
}

/// The Slurm job id in the claim of a stage running as a job, once there is one.
fn claimed_job(p: &Path) -> Option<String> {
    std::fs::read_dir(p.join("outputs/.seqpipe/claims"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "claim"))
        .find_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            v["job"].as_str().map(String::from)
        })
}

fn job_state(id: &str) -> String {
    let o = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", id, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn sweep_lm(epochs: usize) -> String {
    tiny_lm(epochs, "").replace(
        "checkpoint_every: 1 }\n",
        "checkpoint_every: 1 }\n    matrix: { lr: [0.5, 1, 2] }\n",
    )
}

#[test]
fn slurm_sweep_gives_local_bytes_and_a_cached_rerun_submits_nothing() {
    if !slurm_available() {
        return;
    }
    let (a, b) = (project(), project());
    for t in [&a, &b] {
        std::fs::write(t.path().join("tiny.yaml"), sweep_lm(8)).unwrap();
    }
    ok(a.path(), &["run", "-q", "tiny.yaml"]);
    let o = slurm(b.path(), &["run", "tiny.yaml", "--executor", "slurm"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Model stages were jobs; quick text stages ran in the driver.
    let rec = last_record(b.path(), "tiny");
    let jobs: Vec<&str> = rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["job"].is_string())
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["build_model", "train", "train", "train"], "{out}");
    assert_eq!(rec["executor"], "slurm");
    let (x, y) = (view_files(a.path(), "tiny"), view_files(b.path(), "tiny"));
    assert_eq!(x.len(), y.len());
    for (f, g) in x.iter().zip(&y) {
        assert_eq!(f.0, g.0);
        assert!(f.1 == g.1, "{} differs between local and slurm", f.0);
    }
    let o = slurm(b.path(), &["run", "tiny.yaml", "--executor", "slurm"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("0 ran") && !out.contains("submit"),
        "{out}"
    );
    let rec = last_record(b.path(), "tiny");
    assert!(rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["job"].is_null()));
}

#[test]
fn slurm_failure_shows_the_state_and_the_log_tail() {
    if !slurm_available() {
        return;
    }
    let t = project();
    let p = t.path();
    // `batch_size` is for series models: the training fails at run time, inside the job.
    std::fs::write(p.join("tiny.yaml"), tiny_lm(3, ", batch_size: 4")).unwrap();
    let o = slurm(p, &["run", "tiny.yaml", "--executor", "slurm"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error in stage `train`") && err.contains("FAILED"),
        "{err}"
    );
    assert!(
        err.contains("exited with code 1") && err.contains("last lines of"),
        "{err}"
    );
    assert!(
        err.contains("`batch_size` is for series models"),
        "the log's tail: {err}"
    );
    let id = last_record(p, "tiny")["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train")
        .unwrap()["job"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("Slurm job {id} FAILED")), "{err}");
}

#[test]
fn slurm_cancelled_training_is_reported_and_resumes_on_the_rerun() {
    if !slurm_available() {
        return;
    }
    let epochs = 60;
    let reference = trained_tiny(epochs);
    let t = tiny_project(epochs);
    let p = t.path();
    let mut driver = Guard(Some(
        Command::new(BIN)
            .args(["run", "tiny.yaml", "--executor", "slurm"])
            .env("SEQPIPE_SLURM_POLL", "0.2")
            .current_dir(p)
            .output_async(),
    ));
    // Cancel from outside once the job has written a checkpoint a few epochs in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let id = loop {
        let ckpt = std::fs::read_dir(p.join("outputs/.seqpipe/checkpoints"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("ckpt/manifest.json")).ok())
            .any(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default()["epochs_done"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 3
            });
        if let (true, Some(id)) = (ckpt, claimed_job(p)) {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the training job never checkpointed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let _ = driver.get().id();
    assert!(Command::new("scancel").arg(&id).status().unwrap().success());
    let o = driver.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("Slurm job {id} CANCELLED")), "{err}");
    // The rerun resumes from the checkpoint (on whichever node), and ends bit-identical.
    let o = slurm(p, &["run", "tiny.yaml", "--executor", "slurm"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let notes = last_record(p, "tiny")["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train")
        .unwrap()["notes"]
        .to_string();
    assert!(
        notes.contains("resuming from the checkpoint after epoch"),
        "{notes}"
    );
    same_training(
        reference.path(),
        p,
        &["metrics.csv", "model.safetensors", "log.txt"],
        "after resuming on slurm",
    );
}

#[test]
fn slurm_ctrl_c_cancels_every_job() {
    if !slurm_available() {
        return;
    }
    let t = project();
    let p = t.path();
    std::fs::write(p.join("tiny.yaml"), sweep_lm(100000)).unwrap();
    let mut driver = Guard(Some(
        Command::new(BIN)
            .args(["run", "tiny.yaml", "--executor", "slurm"])
            .env("SEQPIPE_SLURM_POLL", "0.2")
            .current_dir(p)
            .output_async(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let id = loop {
        if let Some(id) = claimed_job(p).filter(|_| p.join("outputs/.seqpipe/checkpoints").exists())
        {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no training job started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    unsafe { libc::kill(driver.get().id() as i32, libc::SIGINT) };
    let o = driver.take().wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every job this run submitted (ids from its folder) leaves the queue.
    let run_dir = std::fs::read_dir(p.join("outputs/tiny/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.is_dir())
        .unwrap();
    let logs = std::fs::read_dir(&run_dir).unwrap().count();
    assert!(logs > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let o = Command::new("squeue")
            .args(["-h", "-o", "%i|%j"])
            .output()
            .unwrap();
        let live = String::from_utf8_lossy(&o.stdout).to_string();
        let state = job_state(&id);
        if state == "CANCELLED" && !live.lines().any(|l| l.starts_with(&format!("{id}|"))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} is still {state}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A Slurm controller that takes long to answer: the run says it is waiting (instead of minutes
/// of silence), and a refused submission fails its stage like any other failure, naming the
/// stages it skips. A stand-in `sbatch` on PATH answers after 6 s with a non-transient error.
#[test]
fn a_slow_slurm_controller_is_reported_while_waiting() {
    let t = project();
    let p = t.path();
    let bin = p.join("fake-slurm");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        "#!/bin/sh\nsleep 6\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = Command::new(BIN)
        .args(["run", "pipelines/ex8_4_1.yaml", "--executor", "slurm"])
        .current_dir(p)
        .env("NO_COLOR", "1")
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("waiting for `sbatch`: the Slurm controller has not answered for 5 s"),
        "{err}"
    );
    assert!(err.contains("invalid partition specified"), "{err}");
    assert!(
        !err.contains("retrying"),
        "a non-transient error is not retried: {err}"
    );
    assert!(out.contains("FAILED  model"), "{out}");
    assert!(
        err.contains("skipping downstream of `model`: shapes, report"),
        "{err}"
    );
}
