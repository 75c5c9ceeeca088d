//! Bad input, as a new user writes it: each case's message and exit code, snapshotted (a small
//! builder, `Case`, keeps each case to what differs: files, arguments, the expected exit code);
//! the JSON schema; the front door: bounds on what a file may make, and no panic on any file.

use crate::support::*;
use std::path::{Path, PathBuf};

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
        ("unknown_executor", "name: bad\nexecutor: slurn\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 3 }\n".into(), b"abc\n"),
        ("unknown_executor_option", "name: bad\nexecutor: { kind: slurm, pol: 5 }\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 3 }\n".into(), b"abc\n"),
        ("bad_resources", "name: bad\nresources: { memory: 2G }\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 3 }\n    resources: { cpus: 0, time: 4h, mem: lots, extra: [constraint] }\n  u:\n    kind: toy_sequence\n    params: { length: 3 }\n    resources: { cpus: two }\n".into(), b"abc\n"),
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
    seqpipe::config::tree::parse(text).unwrap().into_json()
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

struct Case {
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Case {
    /// A project with the shipped corpora and pipelines.
    fn new() -> Self {
        Case {
            dir: project(),
            args: Vec::new(),
        }
    }
    fn file(self, name: &str, text: &str) -> Self {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }
    fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Run it; check the exit code and that a refused pipeline wrote nothing; return
    /// "exit code N" and stderr, with the temporary folder's path replaced.
    fn expect(self, code: i32) -> String {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let o = seqpipe(self.dir.path(), &args);
        let err = String::from_utf8_lossy(&o.stderr)
            .replace(&self.dir.path().display().to_string(), "<project>");
        assert_eq!(o.status.code(), Some(code), "{args:?}\n{err}");
        if code == 2 {
            assert!(
                !self.dir.path().join("outputs").exists(),
                "{args:?}: a refused pipeline writes nothing"
            );
        }
        format!("exit code {code}\n{err}")
    }
}

const TOY: &str = "name: t\nstages:\n  t:\n    kind: toy_sequence\n    params: { length: 50 }\n";

#[test]
fn bad_input_is_stopped_before_anything_runs() {
    let cases: Vec<(&str, Case, i32)> = vec![
        (
            "wildcard_set_matches_nothing",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "*.epoch=5"]),
            2,
        ),
        (
            "hidden_too_large",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "model.hidden=1000000"]),
            2,
        ),
        (
            "epochs_too_large",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "train.epochs=1000000000000"]),
            2,
        ),
        (
            "nan_param",
            Case::new()
                .file("p.yaml", "name: p\nstages:\n  s:\n    kind: synthetic_series\n    params: { sigma: .nan }\n")
                .args(&["run", "p.yaml"]),
            2,
        ),
        (
            "inf_in_set",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "train.lr=.inf"]),
            2,
        ),
        (
            "negative_seed",
            Case::new()
                .file("p.yaml", &TOY.replace("name: t\n", "name: t\nseed: -1\n"))
                .args(&["run", "p.yaml"]),
            2,
        ),
        (
            "hidden_wrong_form",
            Case::new()
                .file("p.yaml", "name: p\nstages:\n  s:\n    kind: synthetic_series\n  m:\n    kind: build_model\n    inputs: { data: s }\n    params: { arch: mlp, hidden: wide }\n")
                .args(&["run", "p.yaml"]),
            2,
        ),
        (
            "file_is_a_list",
            Case::new().file("p.yaml", "- a\n- b\n").args(&["run", "p.yaml"]),
            2,
        ),
        (
            "plot_reads_outside_its_inputs",
            Case::new()
                .file("p.yaml", &format!("{TOY}  p:\n    kind: plot\n    inputs: [t]\n    params: {{ title: x, file: ../../../../etc/passwd, x: a, y: b }}\n"))
                .args(&["run", "p.yaml"]),
            2,
        ),
        (
            "set_swept_param",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "train.lr=0.1"]),
            2,
        ),
        (
            "set_variant_name",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "train[lr=1].epochs=2"]),
            2,
        ),
        (
            "set_bad_value_points_at_the_flag",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "*.epochs=-1"]),
            2,
        ),
        (
            "set_axis_not_a_list",
            Case::new().args(&["run", "pipelines/ex8_6_1.yaml", "--set", "train.matrix.lr=0.1"]),
            2,
        ),
        (
            "plot_column_typo",
            Case::new()
                .file(
                    "p.yaml",
                    &std::fs::read_to_string("pipelines/ex8_6_1.yaml")
                        .unwrap()
                        .replace("y: perplexity", "y: perplexiti"),
                )
                .args(&["run", "p.yaml"]),
            2,
        ),
        (
            "bad_value_beside_its_matrix_axis",
            Case::new()
                .file(
                    "p.yaml",
                    &std::fs::read_to_string("pipelines/ex8_6_1.yaml")
                        .unwrap()
                        .replace("params: { epochs: 500, lr: 1 }", "params: { epochs: 500, lr: fast }"),
                )
                .args(&["run", "p.yaml"]),
            2,
        ),
        ("zero_threads", Case::new().args(&["--threads", "0", "kinds"]), 2),
        ("zero_jobs", Case::new().args(&["run", "-j", "0", "pipelines/ex8_3_3.yaml"]), 2),
        (
            "outputs_is_a_file",
            Case::new().file("outputs", "not a folder").args(&["run", "pipelines/ex8_3_3.yaml"]),
            1,
        ),
    ];
    for (name, case, code) in cases {
        let mut out = case.expect(code);
        // The machine's memory differs between machines: keep the snapshot portable.
        if let Some(i) = out.find("this machine's ") {
            let end = out[i..].find(" GB").map(|j| i + j + 3).unwrap_or(out.len());
            out.replace_range(i..end, "this machine's <memory>");
        }
        assert!(
            !out.contains("FileMirror")
                && !out.contains("untagged")
                && !out.contains("u64")
                && !out.contains("found null"),
            "{name}: no internal names: {out}"
        );
        insta::assert_snapshot!(format!("bad_{name}"), out);
    }
}

#[test]
fn bad_bench_flags_exit_2_before_anything_is_printed() {
    let t = project();
    let cases: [(&[&str], &str); 5] = [
        (
            &["bench", "--epochs", "0"],
            "error: invalid value '0' for '--epochs <EPOCHS>': must be at least 1",
        ),
        (
            &["bench", "--cell", "foo"],
            "error: invalid value 'foo' for '--cell <CELL>': valid cells: `rnn_scratch`, `rnn`, `gru`, `lstm`",
        ),
        (
            &["bench", "--cell", "rnn,lstn"],
            "invalid value 'lstn' for '--cell <CELL>': did you mean `lstm`?",
        ),
        (
            &["bench", "--hidden", "256,0"],
            "invalid value '0' for '--hidden <HIDDEN>': must be at least 1",
        ),
        (
            &["bench", "--embedding", "0"],
            "invalid value '0' for '--embedding <EMBEDDING>': must be at least 1",
        ),
    ];
    for (args, want) in cases {
        let o = seqpipe(t.path(), args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{args:?}: nothing printed before the error"
        );
    }
}

#[test]
fn wrong_wiring_is_stopped_before_anything_runs() {
    // `train` fed tokens: every input's artifact type is checked against what its role needs
    // before any stage runs, with the stage that would fit.
    let yaml = "name: bad\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/c.txt }\n  chars:\n    kind: tokenize\n    inputs: { corpus: corpus }\n    params: { unit: char }\n  vocab:\n    kind: build_vocab\n    inputs: { tokens: chars }\n  batches:\n    kind: sample_batches\n    inputs: { corpus: vocab }\n    params: { strategy: sequential, batch_size: 2, num_steps: 5 }\n  model:\n    kind: build_model\n    inputs: { data: batches }\n    params: { arch: rnn, hidden: 8 }\n  train:\n    kind: train\n    inputs: { model: model, data: chars }\n    params: { epochs: 1, lr: 1 }\n  stats:\n    kind: ngram_stats\n    inputs: { tokens: corpus }\n  sample:\n    kind: generate\n    inputs: { model: model }\n    params: { prefix: time }\n";
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("data")).unwrap();
    std::fs::write(t.path().join("data/c.txt"), "the time machine\n").unwrap();
    std::fs::write(t.path().join("bad.yaml"), yaml).unwrap();
    let o = seqpipe(t.path(), &["run", "-q", "bad.yaml"]);
    let code = o.status.code().unwrap();
    assert_eq!(code, 2);
    assert!(
        !t.path().join("outputs").exists(),
        "a badly wired pipeline must write nothing"
    );
    assert!(o.stdout.is_empty());
    insta::assert_snapshot!(
        "error_wrong_wiring",
        format!("exit code {code}\n{}", String::from_utf8_lossy(&o.stderr))
    );
}

/// Every bound a pipeline file can cross is named before anything is expanded (exit 2, with
/// the bound and what would be right), rather than an abort or minutes of work.
#[test]
fn limits_are_named_before_anything_is_expanded() {
    let toy = |extra: &str| {
        format!(
            "name: p\nstages:\n  t:\n    kind: toy_sequence\n    params: {{ length: 10 }}\n{extra}"
        )
    };
    let alias_bomb = {
        let mut t = String::from("name: p\nx: &a [");
        t.push_str(&vec!["1"; 1000].join(", "));
        t.push_str("]\ny: &b [");
        t.push_str(&vec!["*a"; 1000].join(", "));
        t.push_str("]\nz: [*b, *b, *b]\nstages: {}\n");
        t
    };
    let values: Vec<String> = (1..=150_000).map(|i| i.to_string()).collect();
    let cases: Vec<(&str, String)> = vec![
        (
            "file_too_large",
            format!("{}# {}\n", toy(""), "x".repeat(17 << 20)),
        ),
        ("alias_expansion", alias_bomb),
        (
            "too_many_values",
            toy(&format!("    description: [{}]\n", vec!["0"; 2_000_001].join(","))),
        ),
        (
            "nested_too_deeply",
            toy(&format!("    description: {}{}\n", "[".repeat(100), "]".repeat(100))),
        ),
        (
            "matrix_of_ten_axes",
            format!(
                "name: p\nstages:\n  t:\n    kind: synthetic_series\n    matrix:\n{}",
                (0..10)
                    .map(|a| format!("      a{a}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
                    .collect::<String>()
            ),
        ),
        (
            "sweeps_too_large_in_all",
            format!(
                "name: p\nstages:\n  t:\n    kind: toy_sequence\n    matrix: {{ length: [{}] }}\n  b:\n    kind: sample_batches\n    inputs: {{ corpus: t }}\n    params: {{ strategy: random, batch_size: 2, num_steps: 3 }}\n",
                values.join(", ")
            ),
        ),
    ];
    for (name, text) in cases {
        let start = std::time::Instant::now();
        let out = Case::new()
            .file("p.yaml", &text)
            .args(&["run", "p.yaml", "--dry-run"])
            .expect(2);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{name}: took {:?}",
            start.elapsed()
        );
        insta::assert_snapshot!(format!("limit_{name}"), out);
    }
}

/// Parse, sweep, analysis, keys and plan, as `seqpipe run FILE --dry-run` does them, in this
/// process: the plan or the errors as text.
fn dry_run_in_process(file: &Path, digests: &mut seqpipe::key::FileDigests) -> String {
    let p = match seqpipe::pipeline::load(file, &[]) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    let names: Vec<String> = p.stages.iter().take(3).map(|s| s.origin.clone()).collect();
    let targets = match p.resolve_names(&names) {
        Ok(t) => t,
        Err(e) => return e.to_string(),
    };
    let records = match seqpipe::key::compute(&p, &repo(), seqpipe::device::Device::Cpu, digests) {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let plan =
        seqpipe::plan::make_plan(&p, &records, &|_| seqpipe::plan::Cached::No, &targets, &[]);
    seqpipe::plan::PlanView(&p, &plan).to_string()
}

/// One random edit of a pipeline file: characters and lines deleted, inserted or duplicated,
/// YAML punctuation, anchors, aliases and tags.
fn mutate(text: &str, rng: &mut impl rand::Rng) -> String {
    const PUNCT: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        ": ",
        "&",
        "*",
        "!",
        "|",
        ">",
        "-",
        "- ",
        "\"",
        "'",
        "#",
        " #",
        "\n",
        " ",
        "  ",
        "\t",
        "?",
        "%",
        "@",
        "`",
        "\\",
        "~",
        "null",
        ".nan",
        "1e999",
        "&a ",
        "*a",
        "&b [1, 2] ",
        "*b",
        "!!str ",
        "!!int ",
        "!!map ",
        "!tag ",
        "<<: *a\n",
        "---\n",
        "...\n",
        "{ a: \"}\" }",
        "\"}\"",
        "'{'",
        "[[",
        "]]",
        "é",
        "\u{feff}",
        "\0",
    ];
    let mut chars: Vec<char> = text.chars().collect();
    let at = |rng: &mut dyn rand::RngCore, n: usize| {
        if n == 0 {
            0
        } else {
            rng.next_u32() as usize % n
        }
    };
    for _ in 0..rng.gen_range(1..=3) {
        let n = chars.len();
        match rng.gen_range(0..9) {
            0 if n > 0 => {
                chars.remove(at(rng, n));
            }
            1 => {
                let p = PUNCT[rng.gen_range(0..PUNCT.len())];
                let i = at(rng, n + 1);
                chars.splice(i..i, p.chars());
            }
            2 if n > 0 => {
                let i = at(rng, n);
                chars.insert(i, chars[i]);
            }
            3 if n > 0 => {
                // A run of characters replaced by punctuation.
                let i = at(rng, n);
                let j = (i + rng.gen_range(1..8)).min(n);
                let p = PUNCT[rng.gen_range(0..PUNCT.len())];
                chars.splice(i..j, p.chars());
            }
            k => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<String> = s.lines().map(String::from).collect();
                if lines.is_empty() {
                    continue;
                }
                let i = at(rng, lines.len());
                match k {
                    4 => {
                        lines.remove(i);
                    }
                    5 => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    6 => {
                        let j = at(rng, lines.len());
                        lines.swap(i, j);
                    }
                    7 => {
                        // An anchor on a value, and an alias to it somewhere else.
                        if let Some(c) = lines[i].find(": ") {
                            lines[i].insert_str(c + 2, "&x ");
                            let j = at(rng, lines.len());
                            if let Some(c) = lines[j].find(": ") {
                                lines[j].truncate(c + 2);
                                lines[j].push_str("*x");
                            }
                        }
                    }
                    _ => {
                        // Indentation changed.
                        if rng.gen_bool(0.5) {
                            lines[i].insert_str(0, "  ");
                        } else {
                            lines[i] = lines[i].trim_start().to_string();
                        }
                    }
                }
                chars = (lines.join("\n") + "\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

/// No file makes seqpipe panic: a few thousand random edits of the shipped pipelines go
/// through the whole dry run (in this process, each bounded in time), and some through the
/// real binary, which must answer with exit code 0, 1 or 2.
#[test]
fn no_pipeline_file_makes_it_panic() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261207);
    let mut shipped: Vec<(String, String)> = std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    shipped.sort();
    // Cases known to have panicked once.
    let mut files: Vec<String> = vec![
        "name: p\nstages:\n  t: { kind: toy_sequence, description: \"}\", params: { length: 3 } }\n".into(),
        format!("name: p\nstages:\n  {}:\n    kind: toy_sequence\n    params: {{ length: 3 }}\n  m:\n    kind: toy_sequence\n    matrix: {{ length: [3, 4] }}\n", "s".repeat(200)),
    ];
    for _ in 0..4000 {
        let (_, text) = &shipped[rand::Rng::gen_range(&mut rng, 0..shipped.len())];
        files.push(mutate(text, &mut rng));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    let mut digests = seqpipe::key::FileDigests::default();
    let mut failures = Vec::new();
    let mut slowest = (std::time::Duration::ZERO, 0);
    for (i, text) in files.iter().enumerate() {
        std::fs::write(&file, text).unwrap();
        let start = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dry_run_in_process(&file, &mut digests)
        }));
        slowest = slowest.max((start.elapsed(), i));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!(
                "case {i}: panicked: {msg}\n--- file ---\n{text}\n------------"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files panicked; the first:\n{}",
        failures.len(),
        files.len(),
        failures[..failures.len().min(3)].join("\n")
    );
    assert!(
        slowest.0 < std::time::Duration::from_secs(2),
        "case {} took {:?}:\n{}",
        slowest.1,
        slowest.0,
        files[slowest.1]
    );
    // The real binary, on a sample: only the documented exit codes, no panic message.
    let t = project();
    for (i, text) in files.iter().enumerate().step_by(files.len() / 50) {
        std::fs::write(t.path().join("p.yaml"), text).unwrap();
        let o = seqpipe(t.path(), &["run", "p.yaml", "--dry-run"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            matches!(o.status.code(), Some(0..=2)) && !err.contains("panicked"),
            "case {i}: exit {:?}\n{err}\n--- file ---\n{text}",
            o.status.code()
        );
    }
}
