//! The cache: a second run is all hits and byte-identical, a changed param reruns exactly what is
//! downstream, status names the cause, sweeps share upstream stages, gc keeps what the
//! pipelines, the views, a live run and other projects of a shared store use.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    // The views show the override's results: they stay while they are shown.
    let out = ok(p, &["gc"]);
    assert!(
        out.contains("removed 0 entries")
            && out.contains("kept 8 entries (5 reachable from pipelines/, 3 shown in outputs/)"),
        "{out}"
    );
    // Back to the pipeline as written: the override's entries are shown nowhere and go.
    let again = ok(p, &["run", "pipelines/ex8_3_3.yaml"]);
    assert!(again.contains("0 ran, 5 cached"), "{again}");
    let dry = ok(p, &["gc", "--dry-run"]);
    assert!(dry.contains("would remove 3 entries"), "{dry}");
    let out = ok(p, &["gc"]);
    assert!(
        out.contains("removed 3 entries")
            && out.contains("kept 5 entries (5 reachable from pipelines/)"),
        "{out}"
    );
    let again = ok(p, &["run", "pipelines/ex8_3_3.yaml"]);
    assert!(again.contains("0 ran, 5 cached"), "{again}");
}

/// The entry folders in the store.
fn store_entries(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(p.join("outputs/.seqpipe/objects")).unwrap() {
        for e in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(e.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn gc_keeps_what_the_views_show_and_verify_stays_clean() {
    let t = project();
    let p = t.path();
    let run = |fraction: &str| {
        let set = format!("ngrams.top_fraction={fraction}");
        ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml", "--set", &set]);
    };
    // Two overrides: the first one's ngrams, zipf_plot and report are shown nowhere now, the
    // second one's are what outputs/ex8_3_3/ shows.
    run("0.3");
    run("0.5");
    let before = store_entries(p);
    assert_eq!(before.len(), 8);
    let shown = view_files(p, "ex8_3_3");
    let dry = ok(p, &["gc", "--dry-run"]);
    let listed: Vec<&str> = dry
        .lines()
        .filter(|l| l.starts_with("  would remove  "))
        .collect();
    assert_eq!(listed.len(), 3, "{dry}");
    for (line, stage) in listed.iter().zip(["ngrams", "report", "zipf_plot"]) {
        assert!(line.ends_with(&format!("  {stage}")), "{dry}");
        assert!(
            line.contains("iB  ") || line.contains(" B  "),
            "a size: {dry}"
        );
    }
    assert!(
        dry.contains("would remove 3 entries")
            && dry.contains(
                "would keep 5 entries (2 reachable from pipelines/, 3 shown in outputs/)"
            ),
        "{dry}"
    );
    assert_eq!(store_entries(p), before, "a dry run removes nothing");
    let out = ok(p, &["gc"]);
    assert!(
        out.contains("removed 3 entries") && out.contains("kept 5 entries"),
        "{out}"
    );
    assert_eq!(store_entries(p).len(), 5, "kept counts what is left: {out}");
    let v = seqpipe(p, &["verify"]);
    let vout = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(0), "{vout}");
    assert!(
        vout.contains("0 damaged") && !vout.contains("view"),
        "{vout}"
    );
    assert_eq!(view_files(p, "ex8_3_3"), shown, "the views are intact");
    let again = ok(
        p,
        &[
            "run",
            "pipelines/ex8_3_3.yaml",
            "--set",
            "ngrams.top_fraction=0.5",
        ],
    );
    assert!(again.contains("0 ran, 5 cached"), "{again}");
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

#[test]
fn a_shared_store_serves_two_projects_and_gc_keeps_what_others_use() {
    let shared = tempfile::tempdir().unwrap();
    let store = shared.path().join("store");
    let store_s = store.to_str().unwrap();
    let (a, b) = (project(), project());
    ok(
        a.path(),
        &["--store", store_s, "run", "-q", "pipelines/ex8_3_3.yaml"],
    );
    // Another project (SEQPIPE_STORE works like --store) gets every stage from the store.
    let o = Command::new(BIN)
        .args(["run", "pipelines/ex8_3_3.yaml"])
        .env("SEQPIPE_STORE", store_s)
        .current_dir(b.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("0 ran, 5 cached"),
        "{out}"
    );
    assert!(b.path().join("outputs/ex8_3_3/report/report.md").exists());
    assert!(!b.path().join("outputs/.seqpipe/objects").exists());
    // Project b no longer has that pipeline nor its outputs: its gc must not delete what a
    // uses, unless nobody has used it for the given number of days.
    for e in std::fs::read_dir(b.path().join("pipelines")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    std::fs::remove_dir_all(b.path().join("outputs/ex8_3_3")).unwrap();
    std::fs::write(
        b.path().join("pipelines/other.yaml"),
        "name: other\nstages:\n  toy:\n    kind: toy_sequence\n    params: { length: 50 }\n",
    )
    .unwrap();
    let g = ok(b.path(), &["--store", store_s, "gc"]);
    assert!(g.contains("removed 0 entries"), "{g}");
    let g = ok(
        b.path(),
        &["--store", store_s, "gc", "--dry-run", "--older-than", "0"],
    );
    assert!(g.contains("would remove 5 entries"), "{g}");
    let again = ok(
        a.path(),
        &["--store", store_s, "run", "pipelines/ex8_3_3.yaml"],
    );
    assert!(again.contains("0 ran"), "{again}");
}

#[test]
fn sweep_values_that_look_alike_stay_apart() {
    let t = project();
    let p = t.path();
    std::fs::create_dir_all(p.join("data/copy")).unwrap();
    std::fs::write(
        p.join("data/copy/timemachine.txt"),
        "a different book\n".repeat(40),
    )
    .unwrap();
    let long = "x".repeat(300);
    let yaml = format!(
        "name: m\nstages:\n  c:\n    kind: load_corpus\n    params: {{ path: data/timemachine.txt }}\n    matrix: {{ path: [data/timemachine.txt, data/copy/timemachine.txt] }}\n  w:\n    kind: tokenize\n    inputs: {{ corpus: c }}\n    params: {{ unit: word }}\n  g:\n    kind: ngram_generate\n    inputs: {{ tokens: w }}\n    params: {{ n: 2, num_words: 3 }}\n    matrix: {{ prefix: [\"the,time\", \"the_time\", \"{long}\"] }}\n"
    );
    std::fs::write(p.join("m.yaml"), yaml).unwrap();
    ok(p, &["run", "-q", "m.yaml"]);
    let rec = last_record(p, "m");
    let names: Vec<String> = statuses(&rec).into_iter().map(|(n, _, _)| n).collect();
    let loads: Vec<&String> = names.iter().filter(|n| n.starts_with("c[")).collect();
    assert_eq!(loads.len(), 2, "two files, two variants: {names:?}");
    assert_ne!(loads[0], loads[1]);
    let gens: Vec<&String> = names.iter().filter(|n| n.starts_with("g[")).collect();
    assert_eq!(gens.len(), 6, "{names:?}");
    let mut uniq = gens.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 6, "variant names are unique: {gens:?}");
    assert!(
        gens.iter().all(|n| n.len() < 200),
        "long values are shortened: {gens:?}"
    );
    // Every variant computed its own result: none reported as another's hit.
    assert!(statuses(&rec).iter().all(|(_, _, s)| s == "ran"), "{rec}");
    // The two corpora differ, so do their tokens.
    let toks: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| n.starts_with("w["))
        .map(|n| std::fs::read(p.join("outputs/m").join(n).join("summary.json")).unwrap())
        .collect();
    assert_eq!(toks.len(), 2);
    assert_ne!(toks[0], toks[1]);
}

#[test]
fn gc_never_removes_what_a_live_run_uses() {
    let t = project();
    let p = t.path();
    // tiny.yaml is not in pipelines/ and its views are gone: gc does not reach its entries,
    // only the live run does.
    let mut run = long_training(p);
    std::fs::remove_dir_all(p.join("outputs/tiny")).unwrap();
    let g = ok(p, &["gc"]);
    assert!(
        g.contains("removed 0 entries"),
        "entries a live run uses stay: {g}"
    );
    assert!(run.get().try_wait().unwrap().is_none());
    drop(run); // killed: its claim and live record are now stale
    let g = ok(p, &["gc"]);
    assert!(
        g.contains("removed 4 entries"),
        "the corpus is shared with the shipped pipelines: {g}"
    );
}
