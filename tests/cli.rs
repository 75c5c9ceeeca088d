//! Runs the real `seqpipe` binary in temporary project folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_seqpipe");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary project with the shipped pipelines and corpora.
fn project() -> tempfile::TempDir {
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

fn seqpipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
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
fn last_run(dir: &Path, pipeline: &str) -> Vec<(String, String)> {
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

fn ran(dir: &Path, pipeline: &str) -> Vec<String> {
    last_run(dir, pipeline)
        .into_iter()
        .filter(|(_, s)| s == "ran")
        .map(|(n, _)| n)
        .collect()
}

/// Every file under `dir` (but run records) with its bytes.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            if rel.contains("runs") || rel.ends_with("lock") || rel.ends_with("entry.json") {
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

#[test]
fn second_run_is_all_hits_and_byte_identical() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    let first = last_run(p, "ex8_2_2");
    let n = first.len();
    assert!(n >= 9);
    assert!(
        first.iter().all(|(_, s)| s == "ran" || s == "hit"),
        "{first:?}"
    );
    let before = tree(&p.join("outputs"));
    let out = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(out.contains(&format!("0 ran, {n} cached")), "{out}");
    assert!(last_run(p, "ex8_2_2").iter().all(|(_, s)| s == "hit"));
    assert_eq!(before, tree(&p.join("outputs")));
    // The book's facts, read from the artifacts.
    let table = std::fs::read_to_string(p.join("outputs/ex8_2_2/sizes/table.csv")).unwrap();
    insta::assert_snapshot!("ex8_2_2_sizes", table);
    let enc = std::fs::read_to_string(p.join("outputs/ex8_2_2/indices_word/encoded.csv")).unwrap();
    assert!(enc.contains("[1, 19, 50, 40, 2183, 2184, 400]"));
    assert!(enc.contains("[2186, 3, 25, 1044, 362, 113, 7, 1421, 3, 1045, 1]"));
    let enc =
        std::fs::read_to_string(p.join("outputs/ex8_2_2/indices_word_min10/encoded.csv")).unwrap();
    assert!(enc.contains("[1, 19, 50, 40, 0, 0, 0]"));
}

#[test]
fn a_fresh_folder_gives_the_same_bytes() {
    let (a, b) = (project(), project());
    ok(a.path(), &["run", "-q", "pipelines/ex8_3_5.yaml"]);
    ok(b.path(), &["run", "-q", "pipelines/ex8_3_5.yaml"]);
    assert_eq!(
        tree(&a.path().join("outputs")),
        tree(&b.path().join("outputs"))
    );
}

#[test]
fn a_changed_param_reruns_exactly_what_is_downstream() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    ok(
        p,
        &[
            "run",
            "-q",
            "pipelines/ex8_2_2.yaml",
            "--set",
            "vocab_word_min10.min_freq=7",
        ],
    );
    let mut r = ran(p, "ex8_2_2");
    r.sort();
    assert_eq!(
        r,
        ["indices_word_min10", "report", "sizes", "vocab_word_min10"]
    );
    let st = ok(
        p,
        &[
            "status",
            "pipelines/ex8_2_2.yaml",
            "--set",
            "vocab_word_min10.min_freq=15",
        ],
    );
    insta::assert_snapshot!("status_after_override", st);
    // Targets: only the stage and its ancestors.
    ok(
        p,
        &["run", "-q", "pipelines/ex8_2_2.yaml", "vocab_word_min10"],
    );
    assert_eq!(last_run(p, "ex8_2_2").len(), 3);
    assert!(ran(p, "ex8_2_2").is_empty(), "min_freq 10 is still cached");
    // --force: the stage and everything downstream.
    ok(
        p,
        &["run", "-q", "pipelines/ex8_2_2.yaml", "--force", "words"],
    );
    let mut r = ran(p, "ex8_2_2");
    r.sort();
    assert_eq!(
        r,
        [
            "indices_word",
            "indices_word_min10",
            "report",
            "sizes",
            "vocab_word",
            "vocab_word_min10",
            "words"
        ]
    );
}

#[test]
fn status_names_changed_inputs_and_root_causes() {
    let t = project();
    let p = t.path();
    let st = ok(p, &["status", "pipelines/ex8_3_3.yaml"]);
    assert!(
        st.contains("5 of 5 stages stale") && st.contains("never run"),
        "{st}"
    );
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    let st = ok(p, &["status", "pipelines/ex8_3_3.yaml"]);
    assert!(st.contains("0 of 5 stages stale"), "{st}");
    let mut text = std::fs::read(p.join("data/timemachine.txt")).unwrap();
    text.extend_from_slice(b"\nOne more line.\n");
    std::fs::write(p.join("data/timemachine.txt"), text).unwrap();
    let st = ok(
        p,
        &[
            "status",
            "pipelines/ex8_3_3.yaml",
            "--set",
            "ngrams.top_fraction=0.2",
        ],
    );
    insta::assert_snapshot!("status_input_changed", st);
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml", "words"]);
    let out = ok(p, &["run", "pipelines/ex8_3_3.yaml", "--dry-run"]);
    assert!(
        out.contains("hit  words") && out.contains("run  ngrams"),
        "{out}"
    );
    assert!(!p.join("outputs/ex8_3_3/ngrams").exists());
}

#[test]
fn plans_and_dags_of_shipped_pipelines() {
    let t = project();
    let mut files: Vec<_> = std::fs::read_dir(t.path().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    for f in files {
        let name = f.trim_end_matches(".yaml").to_string();
        let path = format!("pipelines/{f}");
        let plan = ok(t.path(), &["run", &path, "--dry-run"]);
        insta::assert_snapshot!(format!("plan_{name}"), plan);
        let dag = ok(t.path(), &["dag", &path, "--format", "mermaid"]);
        insta::assert_snapshot!(format!("dag_{name}"), dag);
    }
}

#[test]
fn dag_formats() {
    let t = project();
    let dot = ok(
        t.path(),
        &["dag", "pipelines/ex8_3_3.yaml", "--format", "dot"],
    );
    assert!(
        dot.starts_with("digraph") && dot.contains("\"corpus\" -> \"words\""),
        "{dot}"
    );
    let text = ok(t.path(), &["dag", "pipelines/ex8_3_3.yaml"]);
    assert!(
        text.contains("ngrams [ngram_stats] <- tokens=words"),
        "{text}"
    );
}

/// (case, pipeline text, files to create) → the exact error and exit code.
#[test]
fn bad_pipelines_and_corpora_get_clear_errors() {
    let stage = |kind: &str, rest: &str| {
        format!("name: bad\nstages:\n  corpus:\n    kind: load_corpus\n    params: {{ path: data/c.txt }}\n  s:\n    kind: {kind}\n{rest}")
    };
    let cases: Vec<(&str, String, &[u8])> = vec![
        ("unknown_kind", stage("tokenise", "    inputs: { corpus: corpus }\n    params: { unit: char }\n"), b"abc\n"),
        ("unknown_param", stage("tokenize", "    inputs: { corpus: corpus }\n    params:\n      unit: char\n      max_tokns: 10\n"), b"abc\n"),
        ("wrong_type", stage("tokenize", "    inputs: { corpus: corpus }\n    params:\n      unit: char\n      max_tokens: lots\n"), b"abc\n"),
        ("bad_enum_value", stage("tokenize", "    inputs: { corpus: corpus }\n    params: { unit: chars }\n"), b"abc\n"),
        ("unknown_input", stage("tokenize", "    inputs: { corpus: corpuss }\n    params: { unit: char }\n"), b"abc\n"),
        ("unknown_role", stage("tokenize", "    inputs: { corpos: corpus }\n    params: { unit: char }\n"), b"abc\n"),
        ("cycle", "name: bad\nstages:\n  a:\n    kind: tokenize\n    inputs: { corpus: c }\n    params: { unit: char }\n  b:\n    kind: build_vocab\n    inputs: { tokens: a }\n  c:\n    kind: tokenize\n    inputs: { corpus: b }\n    params: { unit: word }\n".into(), b"abc\n"),
        ("duplicate_stage", stage("tokenize", "    inputs: { corpus: corpus }\n    params: { unit: char }\n  s:\n    kind: build_vocab\n    inputs: { tokens: s }\n"), b"abc\n"),
        ("missing_corpus_file", "name: bad\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/nope.txt }\n".into(), b"abc\n"),
        ("corpus_not_utf8", "name: bad\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/c.txt }\n".into(), b"caf\xe9 au lait\n"),
        ("empty_corpus", "name: bad\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/c.txt }\n".into(), b""),
        ("corpus_shorter_than_a_batch", stage("tokenize", "    inputs: { corpus: corpus }\n    params: { unit: char }\n  v:\n    kind: build_vocab\n    inputs: { tokens: s }\n  b:\n    kind: sample_batches\n    inputs: { corpus: v }\n    params: { strategy: sequential, batch_size: 32, num_steps: 35 }\n  after:\n    kind: summary_table\n    inputs: [b]\n"), b"a short corpus\n"),
        ("zero_and_negative_sizes", "name: bad\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 0 }\n  b:\n    kind: sample_batches\n    inputs: { corpus: t }\n    params: { strategy: random, batch_size: -2, num_steps: 5 }\n".into(), b"abc\n"),
        ("path_outside_project", "name: bad\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: ../../etc/passwd }\n".into(), b"abc\n"),
        ("several_errors_at_once", stage("tokenize", "    inputs: { corpus: nothere }\n    params: { unit: char, colour: red }\n  t:\n    kind: ngram_stat\n"), b"abc\n"),
        ("unknown_top_level_field", "name: bad\nseeed: 3\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 3 }\n".into(), b"abc\n"),
        ("yaml_syntax", "name: bad\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 3\n".into(), b"abc\n"),
    ];
    for (case, yaml, corpus) in cases {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("data")).unwrap();
        std::fs::write(t.path().join("data/c.txt"), corpus).unwrap();
        std::fs::write(t.path().join("bad.yaml"), &yaml).unwrap();
        let o = seqpipe(t.path(), &["run", "-q", "bad.yaml"]);
        let code = o.status.code().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        // Only stage failures (exit 1) may leave anything behind, and never a broken entry.
        if code == 2 {
            assert!(
                !t.path().join("outputs").exists(),
                "{case}: a bad pipeline file must write nothing"
            );
        }
        assert!(stdout.is_empty() || code == 1, "{case}: {stdout}");
        insta::assert_snapshot!(
            format!("error_{case}"),
            format!("exit code {code}\n{stderr}")
        );
    }
}

#[test]
fn a_killed_run_leaves_no_usable_partial_entry() {
    let t = project();
    let p = t.path();
    // A long stage: many epochs of random batches over the whole word corpus.
    let set = ["--set", "coverage.epochs=3000000"];
    let mut child = Command::new(BIN)
        .args([
            "run",
            "-q",
            "pipelines/ex8_3_5.yaml",
            "coverage[strategy=random]",
        ])
        .args(set)
        .current_dir(p)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let st = ok(
        p,
        &[
            "status",
            "pipelines/ex8_3_5.yaml",
            "--set",
            "coverage.epochs=3000000",
        ],
    );
    assert!(
        st.contains("stale  coverage[strategy=random]"),
        "a killed stage must not look complete:\n{st}"
    );
    // Next run: no crash, and the stage computes again.
    ok(
        p,
        &[
            "run",
            "-q",
            "pipelines/ex8_3_5.yaml",
            "coverage[strategy=random]",
        ],
    );
    assert_eq!(ran(p, "ex8_3_5"), ["coverage[strategy=random]"]);
    // Simulate a crash after the rename but with a damaged file: a warning and a miss.
    let objects = p.join("outputs/.seqpipe/objects");
    let mut damaged = 0;
    for shard in std::fs::read_dir(&objects).unwrap() {
        for e in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let f = e.unwrap().path().join("coverage.csv");
            if f.exists() {
                std::fs::write(&f, "truncated").unwrap();
                damaged += 1;
            }
        }
    }
    assert_eq!(damaged, 1);
    let o = seqpipe(
        p,
        &["run", "pipelines/ex8_3_5.yaml", "coverage[strategy=random]"],
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("treating it as a miss"));
    assert_eq!(ran(p, "ex8_3_5"), ["coverage[strategy=random]"]);
    assert!(
        !p.join("outputs/.seqpipe/tmp").exists()
            || std::fs::read_dir(p.join("outputs/.seqpipe/tmp"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn gc_keeps_what_the_pipelines_reach() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    ok(
        p,
        &[
            "run",
            "-q",
            "pipelines/ex8_3_3.yaml",
            "--set",
            "ngrams.top_fraction=0.5",
        ],
    );
    let dry = ok(p, &["gc", "--dry-run"]);
    assert!(dry.contains("would remove 3 entries"), "{dry}");
    let out = ok(p, &["gc"]);
    assert!(out.contains("removed 3 entries"), "{out}");
    let again = ok(p, &["run", "pipelines/ex8_3_3.yaml"]);
    assert!(again.contains("0 ran, 5 cached"), "{again}");
}

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

trait Spawn {
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
fn tiny_lm(epochs: usize, extra: &str) -> String {
    format!(
        "name: tiny\nseed: 7\nstages:\n  corpus:\n    kind: load_corpus\n    params: {{ path: data/timemachine.txt }}\n  chars:\n    kind: tokenize\n    inputs: {{ corpus: corpus }}\n    params: {{ unit: char, max_tokens: 3000 }}\n  vocab:\n    kind: build_vocab\n    inputs: {{ tokens: chars }}\n  batches:\n    kind: sample_batches\n    inputs: {{ corpus: vocab }}\n    params: {{ strategy: sequential, batch_size: 8, num_steps: 10 }}\n  model:\n    kind: build_model\n    inputs: {{ data: batches }}\n    params: {{ arch: rnn, hidden: 48 }}\n  train:\n    kind: train\n    inputs: {{ model: model, data: batches }}\n    params: {{ epochs: {epochs}, lr: 1, sample_every: 5, num_preds: 10, checkpoint_every: 1{extra} }}\n"
    )
}

fn round3(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    format!("{:.2e}", x)
}

#[test]
fn training_is_deterministic_and_snapshotted() {
    let (a, b) = (project(), project());
    for t in [&a, &b] {
        std::fs::write(t.path().join("tiny.yaml"), tiny_lm(6, "")).unwrap();
        ok(t.path(), &["run", "-q", "tiny.yaml"]);
    }
    let files = |t: &tempfile::TempDir| {
        tree(&t.path().join("outputs"))
            .into_iter()
            .filter(|(n, _)| !n.ends_with("speed.csv"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        files(&a),
        files(&b),
        "same seed, same bytes (weights and metrics)"
    );
    let metrics = std::fs::read_to_string(a.path().join("outputs/tiny/train/metrics.csv")).unwrap();
    let mut rows = String::new();
    for line in metrics.lines().skip(1) {
        let c: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
        rows.push_str(&format!(
            "epoch {} loss {} ppl {} grad {}\n",
            c[0],
            round3(c[1]),
            round3(c[2]),
            round3(c[3])
        ));
    }
    insta::assert_snapshot!("tiny_training_metrics", rows);
    let last: f64 = metrics
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let first: f64 = metrics
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        last < first,
        "training lowers the perplexity: {first} → {last}"
    );
    // The weights carry PyTorch's names.
    let w = std::fs::read(a.path().join("outputs/tiny/train/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(w[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&w[8..8 + header_len]);
    for name in [
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "rnn.bias_ih_l0",
        "rnn.bias_hh_l0",
        "linear.weight",
        "linear.bias",
    ] {
        assert!(header.contains(name), "{name} missing in {header}");
    }
}

#[test]
fn divergence_is_recorded_not_a_crash() {
    let t = project();
    std::fs::write(
        t.path().join("tiny.yaml"),
        tiny_lm(30, ", clip_grad_norm: none")
            .replace("lr: 1,", "lr: 10,")
            .replace(
                "arch: rnn, hidden: 48",
                "arch: rnn_scratch, hidden: 64, activation: relu",
            ),
    )
    .unwrap();
    let out = ok(t.path(), &["run", "tiny.yaml"]);
    let s: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.path().join("outputs/tiny/train/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(s["diverged"], true, "{out}\n{s}");
    let e = s["diverged_epoch"].as_u64().unwrap();
    assert!(e >= 1 && e < 30, "{s}");
    assert_eq!(s["epochs_run"].as_u64().unwrap(), e);
}

#[test]
fn a_killed_training_resumes_bit_identical() {
    let epochs = 80;
    let reference = project();
    std::fs::write(reference.path().join("tiny.yaml"), tiny_lm(epochs, "")).unwrap();
    ok(reference.path(), &["run", "-q", "tiny.yaml"]);

    let t = project();
    let p = t.path();
    std::fs::write(p.join("tiny.yaml"), tiny_lm(epochs, "")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-q", "tiny.yaml"])
        .current_dir(p)
        .spawn()
        .unwrap();
    // Wait for a checkpoint a few epochs in, then SIGKILL.
    let ckpts = p.join("outputs/.seqpipe/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done = std::fs::read_dir(&ckpts)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("ckpt/progress.json")).ok())
            .any(|bytes| {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                v["epochs_done"].as_u64().unwrap_or(0) >= 3
            });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A changed param never resumes that checkpoint.
    let other = ok(
        p,
        &[
            "run",
            "tiny.yaml",
            "--set",
            "train.lr=0.5",
            "--set",
            "train.epochs=2",
        ],
    );
    assert!(!other.contains("resuming"), "{other}");
    let out = ok(p, &["run", "tiny.yaml"]);
    assert!(
        out.contains("resuming from the checkpoint after epoch"),
        "{out}"
    );
    for f in ["metrics.csv", "model.safetensors", "samples.txt"] {
        let a = std::fs::read(reference.path().join("outputs/tiny/train").join(f)).unwrap();
        let b = std::fs::read(p.join("outputs/tiny/train").join(f)).unwrap();
        assert!(a == b, "{f} differs after resuming");
    }
    assert!(
        !ckpts.join("x").exists() && std::fs::read_dir(&ckpts).unwrap().count() == 0,
        "checkpoints are dropped once the stage is committed"
    );
}

/// Numbers of a summary, rounded to 3 significant digits (strings, such as generated text,
/// depend on every bit of the weights and are left out).
fn rounded_summary(dir: &Path) -> String {
    let s: serde_json::Value = match std::fs::read(dir.join("summary.json")) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(_) => return String::new(),
    };
    let mut out = Vec::new();
    for (k, v) in s.as_object().unwrap() {
        match v {
            serde_json::Value::Number(n) if n.is_f64() => {
                out.push(format!("{k}={}", round3(n.as_f64().unwrap())))
            }
            serde_json::Value::Number(n) => out.push(format!("{k}={n}")),
            serde_json::Value::Bool(b) => out.push(format!("{k}={b}")),
            serde_json::Value::Null => out.push(format!("{k}=null")),
            _ => {}
        }
    }
    out.join(" ")
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    )
}

fn last_record(dir: &Path, pipeline: &str) -> serde_json::Value {
    let runs = dir.join("outputs").join(pipeline).join("runs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap()
}

/// Every shipped pipeline, in its quick variant: it runs, its numbers match the snapshot, its
/// plots are real images of the stated size, and its report has its table.
#[test]
fn every_pipeline_runs_quick_with_plots_and_report() {
    let t = project();
    let p = t.path();
    let mut files: Vec<String> = std::fs::read_dir(p.join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    for f in files {
        let name = f.trim_end_matches(".yaml").to_string();
        ok(
            p,
            &[
                "run",
                "-q",
                &format!("pipelines/{f}"),
                "--set",
                "*.epochs=2",
            ],
        );
        let record = last_record(p, &name);
        let mut numbers = String::new();
        let mut plots = 0;
        for s in record["stages"].as_array().unwrap() {
            let stage = s["name"].as_str().unwrap();
            let view = p.join("outputs").join(&name).join(stage);
            numbers.push_str(&format!("{stage}: {}\n", rounded_summary(&view)));
            if s["kind"] == "plot" {
                let params = &record["resolved"][stage]["params"];
                let (w, h) = png_size(
                    &std::fs::read(view.join(format!("{}.png", params["name"].as_str().unwrap())))
                        .unwrap(),
                );
                assert_eq!(
                    (w as u64, h as u64),
                    (
                        params["width"].as_u64().unwrap(),
                        params["height"].as_u64().unwrap()
                    ),
                    "{name}/{stage}"
                );
                let svg = std::fs::read_to_string(
                    view.join(format!("{}.svg", params["name"].as_str().unwrap())),
                )
                .unwrap();
                let title_word = params["title"]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .find(|x| x.chars().all(char::is_alphanumeric))
                    .unwrap();
                assert!(
                    svg.starts_with("<svg")
                        && svg.contains(&format!("width=\"{w}\""))
                        && svg.contains(title_word),
                    "{name}/{stage}: svg"
                );
                plots += 1;
            }
        }
        insta::assert_snapshot!(format!("quick_{name}"), numbers);
        let report = std::fs::read_to_string(p.join("outputs").join(&name).join("report.md"))
            .unwrap_or_else(|_| panic!("{name} has no report.md"));
        assert!(report.contains("|---|"), "{name}: the report has no table");
        assert_eq!(
            report.matches("![").count(),
            plots,
            "{name}: every plot is in the report"
        );
    }
}

#[test]
fn a_sweep_shares_upstream_stages_and_resumes_after_a_kill() {
    let t = project();
    let p = t.path();
    ok(
        p,
        &["run", "-q", "pipelines/ex8_5_2.yaml", "--set", "*.epochs=2"],
    );
    let r = last_record(p, "ex8_5_2");
    let loads: Vec<&str> = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "load_corpus" && s["status"] == "ran")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        loads.len(),
        2,
        "one load per distinct book, however many stages name it: {loads:?}"
    );

    // Kill a sweep once its first variant is committed; the rerun reuses that variant.
    let mut child = Command::new(BIN)
        .args([
            "run",
            "-q",
            "pipelines/ex8_6_2.yaml",
            "--set",
            "train.epochs=3",
        ])
        .current_dir(p)
        .spawn()
        .unwrap();
    let first = p.join("outputs/ex8_6_2/train[num_layers=1]/.key");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !first.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first variant never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ok(
        p,
        &[
            "run",
            "-q",
            "pipelines/ex8_6_2.yaml",
            "--set",
            "train.epochs=3",
        ],
    );
    let status: Vec<(String, String)> = last_run(p, "ex8_6_2");
    let get = |n: &str| {
        status
            .iter()
            .find(|(s, _)| s == n)
            .map(|(_, st)| st.clone())
            .unwrap()
    };
    assert_eq!(get("train[num_layers=1]"), "hit");
    assert_eq!(get("train[num_layers=20]"), "ran");
    let cmp = ok(
        p,
        &[
            "compare",
            "pipelines/ex8_6_2.yaml",
            "--set",
            "train.epochs=3",
            "--stage",
            "train",
        ],
    );
    assert!(
        cmp.contains("train[num_layers=20]") && cmp.contains("final_perplexity"),
        "{cmp}"
    );
}

/// `tiny_lm` with the last 20% of its 3,000 tokens held out, and evaluations of both parts.
fn tiny_lm_valid(valid_fraction: &str, eval_split: &str) -> String {
    tiny_lm(3, "")
        .replace(
            "batch_size: 8, num_steps: 10 }",
            &format!("batch_size: 8, num_steps: 10, valid_fraction: {valid_fraction} }}"),
        )
        + &format!(
            "  eval_train:\n    kind: evaluate\n    inputs: {{ model: train, data: batches }}\n  eval_valid:\n    kind: evaluate\n    inputs: {{ model: train, data: batches }}\n    params: {{ split: {eval_split} }}\n"
        )
}

fn summary(dir: &Path, stage: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(dir.join("outputs/tiny").join(stage).join("summary.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn valid_fraction_holds_out_the_end_and_train_reports_valid_perplexity() {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("tiny.yaml"), tiny_lm_valid("0.2", "valid")).unwrap();
    ok(p, &["run", "-q", "tiny.yaml"]);
    let b = summary(p, "batches");
    assert_eq!(
        (b["train_tokens"].as_u64(), b["valid_tokens"].as_u64()),
        (Some(2400), Some(600))
    );
    // Batches come from the training part only: (2400 - off - 1) / 8 / 10 full batches.
    assert!(b["batches_per_epoch"].as_u64().unwrap() <= 29);
    let metrics = std::fs::read_to_string(p.join("outputs/tiny/train/metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "epoch",
            "loss",
            "perplexity",
            "grad_norm",
            "grad_norm_max",
            "valid_perplexity"
        ]
    );
    let valid: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(valid.len(), 3);
    assert!(valid.iter().all(|v| v.is_finite() && *v > 1.0), "{valid:?}");
    let tr = summary(p, "train");
    let final_valid = tr["final_valid_perplexity"].as_f64().unwrap();
    assert_eq!(final_valid, valid[2]);
    // `evaluate` scores either part; the validation part gives the same number as `train`.
    let ev = summary(p, "eval_valid");
    assert_eq!(ev["perplexity"].as_f64().unwrap(), final_valid);
    assert_eq!(ev["split"], "valid");
    // 600 tokens → rows of 8 × 10 steps: (600 - 1) / 8 = 74 columns, 7 batches of 80 tokens.
    assert_eq!(ev["tokens"].as_u64(), Some(560));
    let et = summary(p, "eval_train");
    assert!(et.get("split").is_none());
    // 2399 / 8 = 299 columns → 29 batches of 80 tokens.
    assert_eq!(et["tokens"].as_u64(), Some(2320));

    // Without a validation part nothing changes: no column, no summary key.
    std::fs::write(p.join("tiny.yaml"), tiny_lm(3, "")).unwrap();
    ok(p, &["run", "-q", "tiny.yaml"]);
    let metrics = std::fs::read_to_string(p.join("outputs/tiny/train/metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().next().unwrap(),
        "epoch,loss,perplexity,grad_norm,grad_norm_max"
    );
    assert!(summary(p, "train").get("final_valid_perplexity").is_none());
    assert!(summary(p, "batches").get("valid_tokens").is_none());
}

#[test]
fn valid_fraction_errors_name_the_param() {
    let t = project();
    let p = t.path();
    let fails = |yaml: String, code: i32| -> String {
        std::fs::write(p.join("tiny.yaml"), yaml).unwrap();
        let o = seqpipe(p, &["run", "-q", "tiny.yaml"]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(code), "{err}");
        err
    };
    for bad in ["1", "1.5", "-0.1"] {
        let err = fails(tiny_lm_valid(bad, "valid"), 2);
        assert!(err.contains("valid_fraction must be in [0, 1)"), "{err}");
    }
    // 0.001 of 3,000 tokens is 3 tokens: not one sequence of num_steps + 1 = 11.
    let err = fails(tiny_lm_valid("0.001", "valid"), 1);
    assert!(err.contains("`valid_fraction` 0.001 holds out 3"), "{err}");
    assert!(err.contains("num_steps + 1 = 11"), "{err}");
    // Too little left to train on.
    let err = fails(tiny_lm_valid("0.99", "valid"), 1);
    assert!(
        err.contains("`valid_fraction` 0.99 leaves 30 of 3000 tokens"),
        "{err}"
    );
    // `split: valid` on data that holds nothing out.
    let err = fails(tiny_lm_valid("0", "valid"), 1);
    assert!(
        err.contains("`split: valid` needs a validation part"),
        "{err}"
    );
    let err = fails(tiny_lm_valid("0.2", "test"), 2);
    assert!(
        err.contains("invalid value `test` for param `split`"),
        "{err}"
    );
}

fn schema_json() -> serde_json::Value {
    serde_json::from_str(&ok(&repo(), &["schema"])).unwrap()
}

#[test]
fn committed_schema_is_current() {
    let printed = ok(&repo(), &["schema"]);
    let committed =
        std::fs::read_to_string(repo().join("pipelines/schema.json")).unwrap_or_default();
    assert!(
        printed == committed,
        "pipelines/schema.json differs from `seqpipe schema` (a stage kind or its params changed); regenerate it with:\n    cargo run -- schema > pipelines/schema.json"
    );
}

fn yaml_to_json(text: &str) -> serde_json::Value {
    let v: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    serde_json::to_value(v).unwrap()
}

fn schema_errors(validator: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn shipped_pipelines_follow_the_schema_and_typos_do_not() {
    let schema = schema_json();
    let validator = jsonschema::validator_for(&schema).expect("a valid draft 2020-12 schema");
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 16);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert_eq!(
            text.lines().next(),
            Some("# yaml-language-server: $schema=schema.json"),
            "{}: the first line points editors at the schema",
            f.display()
        );
        let errors = schema_errors(&validator, &yaml_to_json(&text));
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
    let base = "name: t\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/c.txt }\n  chars:\n    kind: tokenize\n    inputs: { corpus: corpus }\n";
    let valid = |extra: &str| validator.is_valid(&yaml_to_json(&format!("{base}{extra}")));
    assert!(valid("    params: { unit: char, max_tokens: 10 }\n"));
    assert!(valid(
        "    params: { unit: char }\n    matrix: { max_tokens: [10, 20] }\n"
    ));
    assert!(
        valid("    matrix: { unit: [char, word] }\n"),
        "a required param may come from the matrix"
    );
    // A misspelled kind, an unknown param, a bad enum value, a wrong type, a missing param,
    // an unknown role, an unknown matrix axis, an unknown stage field: all rejected.
    for bad in [
        "    params: { unit: char }\n  vocab:\n    kind: build_vocb\n    inputs: { tokens: chars }\n",
        "    params: { unit: char, max_tokns: 10 }\n",
        "    params: { unit: chars }\n",
        "    params: { unit: char, max_tokens: lots }\n",
        "    params: { max_tokens: 10 }\n",
        "    params: { unit: char }\n  vocab:\n    kind: build_vocab\n    inputs: { token: chars }\n",
        "    params: { unit: char }\n    matrix: { max_tokns: [1, 2] }\n",
        "    params: { unit: char }\n    colour: red\n",
    ] {
        assert!(!valid(bad), "accepted: {bad}");
    }
    let errors = schema_errors(
        &validator,
        &yaml_to_json(&format!(
            "{base}    params: {{ unit: char, max_tokns: 10 }}\n"
        )),
    );
    assert!(errors.iter().any(|e| e.contains("max_tokns")), "{errors:?}");
    // Pipeline level: the executor, as a word or an object; unknown fields rejected.
    let top = |head: &str| {
        validator.is_valid(&yaml_to_json(&format!(
            "{head}{base}    params: {{ unit: char }}\n"
        )))
    };
    assert!(top("executor: local\n"));
    assert!(top("executor: { kind: process }\n"));
    assert!(top("device: auto\nseed: 3\n"));
    assert!(!top("executor: remote\n"));
    assert!(!top("executor: { kind: local, workers: 2 }\n"));
    assert!(!top("device: tpu\n"));
    assert!(!top("seeed: 3\n"));
}
