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
    assert_eq!(ran(p, "ex8_2_2").len(), 9);
    let before = tree(&p.join("outputs"));
    let out = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(out.contains("0 ran, 9 cached"), "{out}");
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
            "vocab_word_min10.min_freq=5",
        ],
    );
    let mut r = ran(p, "ex8_2_2");
    r.sort();
    assert_eq!(r, ["indices_word_min10", "sizes", "vocab_word_min10"]);
    let st = ok(
        p,
        &[
            "status",
            "pipelines/ex8_2_2.yaml",
            "--set",
            "vocab_word_min10.min_freq=20",
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
        st.contains("3 of 3 stages stale") && st.contains("never run"),
        "{st}"
    );
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    let st = ok(p, &["status", "pipelines/ex8_3_3.yaml"]);
    assert!(st.contains("0 of 3 stages stale"), "{st}");
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
    let set = ["--set", "random.epochs=3000000"];
    let mut child = Command::new(BIN)
        .args(["run", "-q", "pipelines/ex8_3_5.yaml", "random"])
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
            "random.epochs=3000000",
        ],
    );
    assert!(
        st.contains("stale  random"),
        "a killed stage must not look complete:\n{st}"
    );
    // Next run: no crash, and the stage computes again.
    ok(p, &["run", "-q", "pipelines/ex8_3_5.yaml", "random"]);
    assert_eq!(ran(p, "ex8_3_5"), ["random"]);
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
    let o = seqpipe(p, &["run", "pipelines/ex8_3_5.yaml", "random"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("treating it as a miss"));
    assert_eq!(ran(p, "ex8_3_5"), ["random"]);
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
    assert!(dry.contains("would remove 1 entries"), "{dry}");
    let out = ok(p, &["gc"]);
    assert!(out.contains("removed 1 entries"), "{out}");
    let again = ok(p, &["run", "pipelines/ex8_3_3.yaml"]);
    assert!(again.contains("0 ran, 3 cached"), "{again}");
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
    assert!(again.contains("0 ran, 9 cached"), "{again}");
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
