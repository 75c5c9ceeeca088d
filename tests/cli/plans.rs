//! What seqpipe says before it runs anything: dry runs, the plans and dags of the shipped
//! pipelines (snapshots), targets and --force on swept stages, `kinds`, and a closed pipe.

use crate::support::*;
use std::process::Command;

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

/// Two stages of each pair have the same key: the same kind, params and inputs.
const TWINS: &str = "name: twins\nstages:\n  a:\n    kind: load_corpus\n    params: { path: data/timemachine.txt }\n  b:\n    kind: load_corpus\n    params: { path: data/timemachine.txt }\n  wa:\n    kind: tokenize\n    inputs: { corpus: a }\n    params: { unit: word }\n  wb:\n    kind: tokenize\n    inputs: { corpus: b }\n    params: { unit: word }\n";

#[test]
fn the_plan_counts_stages_of_one_key_once_as_the_run_does() {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("twins.yaml"), TWINS).unwrap();
    let plan = ok(p, &["run", "twins.yaml", "--dry-run"]);
    assert!(
        plan.contains("plan for `twins`: 4 stages, 2 to run, 0 cached, 2 same as another stage"),
        "{plan}"
    );
    assert!(
        plan.lines()
            .any(|l| l.starts_with("  same b ") && l.ends_with("(same key as a: computed once)")),
        "{plan}"
    );
    let out = ok(p, &["run", "twins.yaml"]);
    assert!(
        out.contains("twins: 4 stages, 2 to run, 2 same as another stage")
            && out.contains("twins: 2 ran, 0 cached, 2 same as another stage"),
        "{out}"
    );
    let rec = last_record(p, "twins");
    let noted = rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["notes"][0]
                .as_str()
                .is_some_and(|n| n.contains("same key as `"))
        })
        .count();
    assert_eq!(noted, 2, "{rec}");
    assert!(ok(p, &["run", "twins.yaml", "--dry-run"]).contains("4 stages, 0 to run, 4 cached\n"));
    assert!(ok(p, &["run", "twins.yaml"]).contains("0 ran, 4 cached, in"));
    // Forced twins: computed once as well, and the plan says so.
    let force = ["run", "twins.yaml", "--force", "a", "--force", "b"];
    let plan = ok(p, &[&force[..], &["--dry-run"]].concat());
    assert!(
        plan.contains("4 stages, 2 to run, 0 cached, 2 same as another stage"),
        "{plan}"
    );
    let out = ok(p, &force);
    assert!(
        out.contains("2 ran, 0 cached, 2 same as another stage"),
        "{out}"
    );
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

#[test]
fn a_closed_pipe_ends_quietly() {
    let mut child = Command::new(BIN)
        .arg("kinds")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `seqpipe kinds | head -0`
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_stage_as_written_names_all_its_variants_and_a_sweep_can_be_replaced() {
    let t = project();
    let p = t.path();
    // Targets and --force take the written name of a swept stage: every variant.
    let plan = ok(p, &["run", "pipelines/ex8_2_2.yaml", "tokens", "--dry-run"]);
    assert!(plan.contains("tokens[unit=char]") && plan.contains("tokens[unit=word]"));
    assert!(
        !plan.contains("vocab_vs_min_freq"),
        "only the targets' ancestors: {plan}"
    );
    // Cache them (and `chars`/`words`, which share their keys), then force them.
    ok(
        p,
        &[
            "run",
            "-q",
            "pipelines/ex8_2_2.yaml",
            "tokens",
            "chars",
            "words",
        ],
    );
    let plan = ok(
        p,
        &[
            "run",
            "pipelines/ex8_2_2.yaml",
            "--force",
            "tokens",
            "--dry-run",
        ],
    );
    for v in ["tokens[unit=char]", "tokens[unit=word]"] {
        let line = plan
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(v))
            .unwrap_or_else(|| panic!("{v} missing from the plan:\n{plan}"));
        assert!(
            line.trim_start().starts_with("run"),
            "{v} cached, yet not forced: {line}"
        );
    }
    // A swept param's values are replaced with `STAGE.matrix.PARAM=[...]`.
    let plan = ok(
        p,
        &[
            "run",
            "pipelines/ex8_6_1.yaml",
            "--set",
            "train.matrix.lr=[0.1, 2]",
            "--dry-run",
        ],
    );
    assert!(
        plan.contains("train[lr=0.1]") && plan.contains("train[lr=2]"),
        "{plan}"
    );
    assert!(
        !plan.contains("train[lr=1]") && !plan.contains("train[lr=10]"),
        "{plan}"
    );
}

#[test]
fn kinds_describes_one_kind_with_types_and_defaults() {
    let t = project();
    let out = ok(t.path(), &["kinds", "train"]);
    assert!(out.starts_with("train  v"), "{out}");
    assert!(out.contains("inputs: model, data"), "{out}");
    let line = |p: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(p))
            .unwrap_or_else(|| panic!("no line for {p}:\n{out}"))
            .to_string()
    };
    assert!(line("epochs").contains("required"), "{out}");
    assert!(line("optimizer").contains("sgd|adam") && line("optimizer").contains("default sgd"));
    let o = seqpipe(t.path(), &["kinds", "trian"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no kind `trian`") && err.contains("did you mean `train`?"),
        "{err}"
    );
}
