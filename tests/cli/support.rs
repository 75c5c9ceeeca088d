//! Helpers shared by the test modules: a temporary project, running seqpipe (`seqpipe`, `ok`),
//! reading run records and views, the tiny language model the training tests use, `Guard` for
//! children killed when a test ends, and whether a Slurm cluster is up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_seqpipe");

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary project with the shipped pipelines and corpora.
pub(crate) fn project() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for d in ["pipelines", "data"] {
        std::fs::create_dir_all(t.path().join(d)).unwrap();
        for e in std::fs::read_dir(repo().join(d)).unwrap() {
            let e = e.unwrap();
            if e.path().is_file() {
                std::fs::copy(e.path(), t.path().join(d).join(e.file_name())).unwrap();
            }
        }
    }
    t
}

pub(crate) fn seqpipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // kernel choices go to the project, not to the user's cache folder
        .env("SEQPIPE_KERNEL_CACHE", dir.join(".kernels"))
        .output()
        .unwrap()
}

pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let o = seqpipe(dir, args);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "seqpipe {args:?} failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The statuses of the last run record: stage → hit|ran|failed|skipped.
pub(crate) fn last_run(dir: &Path, pipeline: &str) -> Vec<(String, String)> {
    let runs = dir.join("outputs").join(pipeline).join("runs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(crate) fn ran(dir: &Path, pipeline: &str) -> Vec<String> {
    last_run(dir, pipeline)
        .into_iter()
        .filter(|(_, s)| s == "ran")
        .map(|(n, _)| n)
        .collect()
}

/// Every file under `dir` (but run records and results pages) with its bytes.
pub(crate) fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            // report.html names the run (id, times), as the run records do.
            if rel.contains("runs")
                || rel.ends_with("lock")
                || rel.ends_with("entry.json")
                || rel.ends_with("report.html")
            {
                continue;
            }
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A child killed when the test ends, even by a failed assertion (no stray trainings).
pub(crate) struct Guard(pub(crate) Option<std::process::Child>);

impl Guard {
    pub(crate) fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().unwrap()
    }
    pub(crate) fn take(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) trait Spawn {
    fn output_async(&mut self) -> std::process::Child;
}

impl Spawn for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// A tiny character language model: fast enough for tests, big enough to learn.
pub(crate) fn tiny_lm(epochs: usize, extra: &str) -> String {
    format!(
        "name: tiny\nseed: 7\nstages:\n  corpus:\n    kind: load_corpus\n    params: {{ path: data/timemachine.txt }}\n  chars:\n    kind: tokenize\n    inputs: {{ corpus: corpus }}\n    params: {{ unit: char, max_tokens: 3000 }}\n  vocab:\n    kind: build_vocab\n    inputs: {{ tokens: chars }}\n  batches:\n    kind: sample_batches\n    inputs: {{ corpus: vocab }}\n    params: {{ strategy: sequential, batch_size: 8, num_steps: 10 }}\n  model:\n    kind: build_model\n    inputs: {{ data: batches }}\n    params: {{ arch: rnn, hidden: 48 }}\n  train:\n    kind: train\n    inputs: {{ model: model, data: batches }}\n    params: {{ epochs: {epochs}, lr: 1, sample_every: 5, num_preds: 10, checkpoint_every: 1{extra} }}\n"
    )
}

/// A project holding `tiny.yaml` with `epochs` epochs.
pub(crate) fn tiny_project(epochs: usize) -> tempfile::TempDir {
    let t = project();
    std::fs::write(t.path().join("tiny.yaml"), tiny_lm(epochs, "")).unwrap();
    t
}

/// `tiny_project` run to the end: the reference an interrupted run must match.
pub(crate) fn trained_tiny(epochs: usize) -> tempfile::TempDir {
    let t = tiny_project(epochs);
    ok(t.path(), &["run", "-q", "tiny.yaml"]);
    t
}

pub(crate) fn round3(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    format!("{:.2e}", x)
}

/// The training's files in two projects are the same bytes (what an uninterrupted run wrote).
pub(crate) fn same_training(reference: &Path, p: &Path, files: &[&str], what: &str) {
    for f in files {
        let a = std::fs::read(reference.join("outputs/tiny/train").join(f)).unwrap();
        let b = std::fs::read(p.join("outputs/tiny/train").join(f)).unwrap();
        assert!(a == b, "{f} differs {what}");
    }
}

pub(crate) fn last_record(dir: &Path, pipeline: &str) -> serde_json::Value {
    let runs = dir.join("outputs").join(pipeline).join("runs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap()
}

/// The store folder of the entry a view shows.
pub(crate) fn entry_dir(p: &Path, pipeline: &str, stage: &str) -> PathBuf {
    let key =
        std::fs::read_to_string(p.join("outputs").join(pipeline).join(stage).join(".key")).unwrap();
    p.join("outputs/.seqpipe/objects")
        .join(&key[..2])
        .join(key.trim())
}

pub(crate) fn make_writable(f: &Path) {
    let mut perm = std::fs::metadata(f).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(f, perm).unwrap();
}

pub(crate) fn statuses(record: &serde_json::Value) -> Vec<(String, String, String)> {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["key"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `run tiny.yaml` with 100,000 epochs (it runs until the test drops it), once it is training.
pub(crate) fn long_training(p: &Path) -> Guard {
    std::fs::write(p.join("tiny.yaml"), tiny_lm(100000, "")).unwrap();
    let run = Guard(Some(
        Command::new(BIN)
            .args(["run", "-q", "tiny.yaml"])
            .current_dir(p)
            .spawn()
            .unwrap(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !p.join("outputs/.seqpipe/checkpoints").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the long run never started training"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    run
}

/// Every file of the views of `pipeline`, but timings (speed.csv, the page's speed section).
pub(crate) fn view_files(p: &Path, pipeline: &str) -> Vec<(String, Vec<u8>)> {
    tree(&p.join("outputs").join(pipeline))
        .into_iter()
        .filter(|(n, _)| !n.ends_with("speed.csv") && n != "report.md")
        .collect()
}

pub(crate) fn slurm_available() -> bool {
    let up = std::env::var_os("SLURM_CONF").is_some()
        && Command::new("squeue")
            .arg("-h")
            .output()
            .is_ok_and(|o| o.status.success());
    if !up {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no Slurm cluster answers: .ci/run starts one with scripts/slurm-up.sh and exports SLURM_CONF");
        }
        eprintln!(
            "skipped: no Slurm cluster (start one with scripts/slurm-up.sh and export SLURM_CONF)"
        );
    }
    up
}
