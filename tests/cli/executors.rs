//! Runs side by side and stages run as separate processes: concurrent runs, --keep-going, the
//! process executor's bytes and progress, child jobs killed, Ctrl-C, kills at random moments.

use crate::support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn concurrent_runs_corrupt_nothing() {
    let t = project();
    let p = t.path();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(BIN)
                .args(["run", "-q", "-j", "2", "pipelines/ex8_2_2.yaml"])
                .current_dir(p)
                .output_async()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let again = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(again.contains("0 ran, "), "{again}");
}

#[test]
fn a_failure_skips_downstream_and_keep_going_runs_the_rest() {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("data/short.txt"), "tiny\n").unwrap();
    let yaml = "name: kg\nstages:\n  bad:\n    kind: load_corpus\n    params: { path: data/short.txt }\n  toks:\n    kind: tokenize\n    inputs: { corpus: bad }\n    params: { unit: char }\n  vocab:\n    kind: build_vocab\n    inputs: { tokens: toks }\n  batches:\n    kind: sample_batches\n    inputs: { corpus: vocab }\n    params: { strategy: random, batch_size: 4, num_steps: 4 }\n  after:\n    kind: summary_table\n    inputs: [batches]\n  toy:\n    kind: toy_sequence\n    params: { length: 50 }\n";
    std::fs::write(p.join("kg.yaml"), yaml).unwrap();
    let o = seqpipe(p, &["run", "kg.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("skipping downstream of `batches`: after"),
        "{err}"
    );
    assert!(!ran(p, "kg").contains(&"toy".to_string()));
    let o = seqpipe(p, &["run", "kg.yaml", "--keep-going"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(ran(p, "kg").contains(&"toy".to_string()));
}

#[test]
fn two_pipelines_run_at_once_without_waiting_for_each_other() {
    let t = project();
    let p = t.path();
    let mut long = long_training(p);
    let claims = p.join("outputs/.seqpipe/claims");
    assert!(std::fs::read_dir(&claims).unwrap().count() >= 1);
    let t0 = std::time::Instant::now();
    let out = ok(p, &["run", "pipelines/ex8_3_3.yaml"]);
    assert!(
        out.contains("4 ran, 1 cached"),
        "the corpus is shared: {out}"
    );
    assert!(
        long.get().try_wait().unwrap().is_none(),
        "the short run finished while the long one still runs"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    drop(long);
    // The killed run's claim is taken over by the next run that needs the key.
    let o = seqpipe(
        p,
        &["run", "tiny.yaml", "--set", "train.epochs=1", "--dry-run"],
    );
    assert!(o.status.success());
}

#[test]
fn two_runs_sharing_stages_compute_each_key_once() {
    let t = project();
    let p = t.path();
    // Two pipelines of different names with the same stages: the same keys.
    for name in ["one", "two"] {
        let y = tiny_lm(150, "").replace("name: tiny", &format!("name: {name}"));
        std::fs::write(p.join(format!("{name}.yaml")), y).unwrap();
    }
    let children: Vec<_> = ["one", "two"]
        .iter()
        .map(|n| {
            Command::new(BIN)
                .args(["run", &format!("{n}.yaml")])
                .current_dir(p)
                .output_async()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for n in ["one", "two"] {
        for (_, key, status) in statuses(&last_record(p, n)) {
            by_key.entry(key).or_default().push(status);
        }
    }
    for (key, s) in &by_key {
        assert_eq!(
            s.iter().filter(|s| *s == "ran").count(),
            1,
            "key {key} computed once: {s:?}"
        );
    }
    let train_key = statuses(&last_record(p, "one"))
        .into_iter()
        .find(|(n, _, _)| n == "train")
        .unwrap()
        .1;
    let mut train = by_key[&train_key].clone();
    train.sort();
    assert_eq!(
        train,
        ["ran", "reused"],
        "one run trains, the other waits and uses it"
    );
    assert_eq!(
        std::fs::read(p.join("outputs/one/train/metrics.csv")).unwrap(),
        std::fs::read(p.join("outputs/two/train/metrics.csv")).unwrap()
    );
    assert!(ok(p, &["verify"]).contains("0 damaged"));
}

#[test]
fn process_executor_gives_the_same_bytes_as_local() {
    let (a, b) = (project(), project());
    let args = ["run", "-q", "pipelines/ex8_5_6.yaml", "--set", "*.epochs=2"];
    ok(a.path(), &args);
    let out = ok(
        b.path(),
        &[&args[..], &["--executor", "process", "-j", "2"]].concat(),
    );
    assert!(out.contains("0 cached"), "{out}");
    let (x, y) = (
        view_files(a.path(), "ex8_5_6"),
        view_files(b.path(), "ex8_5_6"),
    );
    assert!(x.len() > 20);
    assert_eq!(
        x.iter().map(|f| &f.0).collect::<Vec<_>>(),
        y.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (f, g) in x.iter().zip(&y) {
        assert!(f.1 == g.1, "{} differs between local and process", f.0);
    }
    let rec = last_record(b.path(), "ex8_5_6");
    assert_eq!(rec["executor"], "process");
    let logs: Vec<&str> = rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["log"].as_str())
        .collect();
    assert!(!logs.is_empty());
    for l in logs {
        assert!(
            l.contains("/runs/") && std::fs::read_to_string(l).unwrap().contains("exec-job"),
            "job logs live with the run record: {l}"
        );
    }
    // The file's `executor:` is used when the CLI names none.
    let yaml = std::fs::read_to_string(a.path().join("pipelines/ex8_3_3.yaml")).unwrap();
    std::fs::write(
        a.path().join("pe.yaml"),
        yaml.replacen("stages:", "executor: process\nstages:", 1),
    )
    .unwrap();
    ok(a.path(), &["run", "-q", "pe.yaml"]);
    let name = yaml
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(last_record(a.path(), &name)["executor"], "process");
}

/// The pid in the claim file of a running stage (the exec-job child, for `process`).
fn claim_owner(p: &Path) -> Option<u32> {
    std::fs::read_dir(p.join("outputs/.seqpipe/claims"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "claim"))
        .find_map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            v["owner"]["pid"].as_u64().map(|p| p as u32)
        })
}

/// `run tiny.yaml --executor process`, once its training runs: the driver, and the pid of the
/// child job that holds the training's claim.
fn training_in_a_child(p: &Path) -> (Guard, u32) {
    let driver = Guard(Some(
        Command::new(BIN)
            .args(["run", "tiny.yaml", "--executor", "process"])
            .current_dir(p)
            .output_async(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if p.join("outputs/.seqpipe/checkpoints").exists() {
            if let Some(pid) = claim_owner(p) {
                return (driver, pid);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "training never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_killed_child_job_fails_its_stage_and_the_rerun_completes() {
    let epochs = 60;
    let reference = trained_tiny(epochs);
    let t = tiny_project(epochs);
    let p = t.path();
    let (mut driver, child) = training_in_a_child(p);
    assert_ne!(
        child,
        driver.get().id(),
        "the stage runs in a child, which holds the claim"
    );
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    let o = driver.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error in stage `train`") && err.contains("SIGKILL"),
        "{err}"
    );
    assert!(
        err.contains("last lines of"),
        "the log's tail is shown: {err}"
    );
    let out = ok(p, &["run", "tiny.yaml", "--executor", "process"]);
    assert!(out.contains("1 ran"), "{out}");
    same_training(
        reference.path(),
        p,
        &["metrics.csv", "model.safetensors", "log.txt"],
        "after the rerun",
    );
}

/// The line of `stage` in a run's output that starts with `verb` (`FAILED`, `ran`, …).
fn stage_line<'a>(out: &'a str, verb: &str, stage: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(verb) && w.next() == Some(stage)
        })
        .unwrap_or_else(|| panic!("no `{verb} {stage}` line in:\n{out}"))
}

#[test]
fn a_killed_child_job_reports_the_time_it_ran() {
    let t = tiny_project(100000);
    let p = t.path();
    let (driver, child) = training_in_a_child(p);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    let o = driver.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = stage_line(&out, "FAILED", "train");
    let secs: f64 = line
        .split("after ")
        .nth(1)
        .and_then(|t| t.strip_suffix(" s"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a time in seconds: {line}"));
    assert!(secs >= 1.5, "the job ran at least 1.5 s: {line}");
}

#[test]
fn the_process_executor_shows_progress_and_the_resume_note() {
    let epochs = 150;
    let t = tiny_project(epochs);
    let p = t.path();
    let (driver, child) = training_in_a_child(p);
    // Once a checkpoint is written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_dir(p.join("outputs/.seqpipe/checkpoints"))
        .unwrap()
        .any(|e| e.unwrap().path().join("ckpt/manifest.json").exists())
    {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    let o = driver.take().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = ok(p, &["run", "tiny.yaml", "--executor", "process"]);
    assert!(
        out.contains("  [train] resuming from the checkpoint after epoch"),
        "the job's note is shown by the driver: {out}"
    );
    assert!(
        out.contains(&format!("/{epochs} epochs")),
        "the job's progress is shown by the driver: {out}"
    );
    assert!(
        out.contains("  [train] epoch "),
        "the samples are shown as in a local run: {out}"
    );
    stage_line(&out, "ran", "train");
}

#[test]
fn a_rerun_after_a_killed_driver_says_whom_it_waits_for() {
    let t = tiny_project(300);
    let p = t.path();
    // The driver dies; its child job trains on and holds the key's claim.
    let (mut driver, child) = training_in_a_child(p);
    unsafe { libc::kill(driver.get().id() as i32, libc::SIGKILL) };
    let _ = driver.take().wait();
    assert!(Path::new(&format!("/proc/{child}")).exists());
    let out = ok(p, &["run", "tiny.yaml", "--executor", "process"]);
    assert!(
        out.contains("  [train] waiting: stage `train` of `tiny`")
            && out.contains(&format!("pid {child} on"))
            && out.contains("is computing the same key"),
        "{out}"
    );
    stage_line(&out, "reused", "train");
}

#[test]
fn ctrl_c_stops_child_jobs_and_leaves_no_partial_entry() {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("tiny.yaml"), tiny_lm(100000, "")).unwrap();
    let (mut driver, child) = training_in_a_child(p);
    unsafe { libc::kill(driver.get().id() as i32, libc::SIGINT) };
    let o = driver.take().wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !Path::new(&format!("/proc/{child}")).exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the child job is stopped"
    );
    let st = ok(p, &["status", "tiny.yaml"]);
    assert!(st.contains("stale  train"), "{st}");
    assert!(ok(p, &["verify"]).contains("0 damaged"));
}

#[test]
fn kills_at_random_moments_leave_nothing_behind() {
    let t = project();
    let p = t.path();
    // Kill -9 at spread-out moments of cold runs (the store is removed between tries so that
    // each one computes and publishes); then one run must complete, with a clean store.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(p.join("outputs/.seqpipe/objects"));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = 20 + x % 350;
        let mut child = Guard(Some(
            Command::new(BIN)
                .args(["run", "-q", "pipelines/ex8_2_2.yaml", "-j", "2"])
                .current_dir(p)
                .spawn()
                .unwrap(),
        ));
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.get().kill();
        let _ = child.get().wait();
    }
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    let leftovers: Vec<String> = std::fs::read_dir(p.join("outputs/ex8_2_2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-") || n.starts_with(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for d in ["tmp", "claims", "trash"] {
        let n = std::fs::read_dir(p.join("outputs/.seqpipe").join(d))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "outputs/.seqpipe/{d} is not empty");
    }
    let v = ok(p, &["verify"]);
    assert!(v.contains("0 damaged"), "{v}");
    let out = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(out.contains("0 ran"), "{out}");
}
