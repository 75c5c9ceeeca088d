//! The store's trust edges, tried as a user and a co-user would: an input edited while a run
//! goes on, links planted in a shared store, a crafted entry record, a user's edit in a view
//! that a run switches to a new entry. Each test failed before the store checked these.

use crate::support::*;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A training, then a second corpus (`data/b.txt`): with `-j 1` the scheduler starts ready
/// stages in the file's order, so the corpus is read after the training.
fn train_then_corpus(epochs: usize) -> String {
    tiny_lm(epochs, "")
        + "  b_corpus:\n    kind: load_corpus\n    params: { path: data/b.txt, preprocess: none }\n"
}

fn spawn_run(p: &Path, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .current_dir(p)
        .env("NO_COLOR", "1")
        .output_async()
}

/// Wait until the training has written a checkpoint (it is running), at most 60 s.
fn wait_for_training(p: &Path, child: &mut std::process::Child) {
    let t = std::time::Instant::now();
    loop {
        let ckpts = p.join("outputs/.seqpipe/checkpoints");
        let started = std::fs::read_dir(&ckpts)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()))
            })
            .unwrap_or(false);
        if started {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its training started"
        );
        assert!(t.elapsed().as_secs() < 60, "the training did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn an_input_edited_mid_run_is_never_committed(executor: &str) {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("data/b.txt"), "the original text\n").unwrap();
    std::fs::write(
        p.join("mid.yaml"),
        train_then_corpus(150).replace("name: tiny", "name: mid"),
    )
    .unwrap();
    let mut child = Guard(Some(spawn_run(
        p,
        &["run", "-j", "1", "--executor", executor, "mid.yaml"],
    )));
    wait_for_training(p, child.get());
    // An editor's save (or a `git checkout`) while the training goes on.
    std::fs::write(p.join("data/b.txt"), "an edited text\n").unwrap();
    let o = child.take().wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("`data/b.txt` changed while the run was going on"),
        "{out}\n{err}"
    );
    assert!(!p.join("outputs/mid/b_corpus/lines.txt").exists(), "{out}");
    // Restored: the next run computes the corpus from the file as it is, never the edit.
    std::fs::write(p.join("data/b.txt"), "the original text\n").unwrap();
    let again = ok(p, &["run", "--executor", executor, "mid.yaml"]);
    assert_eq!(ran(p, "mid"), ["b_corpus"], "{again}");
    assert_eq!(
        std::fs::read_to_string(p.join("outputs/mid/b_corpus/lines.txt")).unwrap(),
        "the original text"
    );
}

#[test]
fn an_input_edited_mid_run_is_never_committed_local() {
    an_input_edited_mid_run_is_never_committed("local");
}

#[test]
fn an_input_edited_mid_run_is_never_committed_process() {
    an_input_edited_mid_run_is_never_committed("process");
}

/// A victim's folder, with a subfolder and a file that must survive every command.
fn victim() -> tempfile::TempDir {
    let v = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(v.path().join("thesis/chapter1")).unwrap();
    std::fs::write(v.path().join("thesis/chapter1/draft.txt"), "years of work").unwrap();
    std::fs::write(v.path().join("notes.txt"), "keep me").unwrap();
    v
}

fn victim_intact(v: &Path) {
    assert_eq!(
        std::fs::read_to_string(v.join("thesis/chapter1/draft.txt")).unwrap(),
        "years of work"
    );
    assert_eq!(
        std::fs::read_to_string(v.join("notes.txt")).unwrap(),
        "keep me"
    );
}

/// A project that ran `ex8_3_3` with its cache in a shared store (`<first>/store`).
fn shared_store_project() -> (tempfile::TempDir, tempfile::TempDir) {
    let shared = tempfile::tempdir().unwrap();
    let t = project();
    let store = shared.path().join("store");
    ok(
        t.path(),
        &[
            "--store",
            store.to_str().unwrap(),
            "run",
            "-q",
            "pipelines/ex8_3_3.yaml",
        ],
    );
    (shared, t)
}

#[test]
fn planted_links_in_a_shared_store_are_reported_and_never_followed() {
    let (shared, t) = shared_store_project();
    let store = shared.path().join("store");
    let s = store.to_str().unwrap();
    let p = t.path();
    let v = victim();
    // A co-user plants links where the store keeps shards, checkpoints and quarantine.
    for d in ["checkpoints", "quarantine"] {
        std::fs::create_dir_all(store.join(d)).unwrap();
    }
    symlink(v.path(), store.join("objects/zz")).unwrap();
    symlink(v.path(), store.join("checkpoints").join("ab".repeat(32))).unwrap();
    symlink(
        v.path(),
        store
            .join("quarantine")
            .join(format!("{}-1~elsewhere~1", "cd".repeat(32))),
    )
    .unwrap();
    let vo = seqpipe(p, &["--store", s, "verify", "--repair"]);
    let vout = String::from_utf8_lossy(&vo.stdout);
    assert_eq!(vo.status.code(), Some(1), "{vout}");
    assert!(vout.contains("objects/zz: a symbolic link"), "{vout}");
    assert!(vout.contains("strange"), "{vout}");
    victim_intact(v.path());
    let g = ok(p, &["--store", s, "gc", "--older-than", "0"]);
    victim_intact(v.path());
    assert!(g.contains("gc: removed"), "{g}");
    // The whole `checkpoints` folder swapped for a link: a run refuses to use the store.
    std::fs::remove_dir_all(store.join("checkpoints")).unwrap();
    symlink(v.path(), store.join("checkpoints")).unwrap();
    let r = seqpipe(p, &["--store", s, "run", "pipelines/ex8_3_3.yaml"]);
    let rerr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{rerr}");
    assert!(rerr.contains("checkpoints is a symbolic link"), "{rerr}");
    ok(p, &["--store", s, "gc", "--older-than", "0"]);
    victim_intact(v.path());
}

#[test]
fn a_planted_link_at_a_used_stamp_truncates_nothing() {
    let (shared, t) = shared_store_project();
    let store = shared.path().join("store");
    let s = store.to_str().unwrap();
    let p = t.path();
    let v = victim();
    // Every `used/<key>` stamp replaced by a link to the victim's file.
    let used: Vec<PathBuf> = std::fs::read_dir(store.join("used"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    for u in &used {
        std::fs::remove_file(u).unwrap();
        symlink(v.path().join("notes.txt"), u).unwrap();
    }
    let fresh = project();
    let out = ok(
        fresh.path(),
        &["--store", s, "run", "pipelines/ex8_3_3.yaml"],
    );
    assert!(out.contains("0 ran"), "{out}");
    victim_intact(v.path());
    let vo = seqpipe(p, &["--store", s, "verify"]);
    assert!(
        String::from_utf8_lossy(&vo.stdout)
            .contains("a symbolic link, where the store keeps a file"),
        "{}",
        String::from_utf8_lossy(&vo.stdout)
    );
}

#[test]
fn a_crafted_record_cannot_write_outside_the_view() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    std::fs::write(p.join("lines.txt"), "a project file\n").unwrap();
    // A co-user rewrites the corpus entry's record: one more file, named to climb out of the
    // view, backed by a file of the right digest where that name leads inside the store.
    let dir = entry_dir(p, "ex8_3_3", "corpus");
    let meta = p.join("outputs/.seqpipe");
    std::fs::write(meta.join("lines.txt"), "planted\n").unwrap();
    let record = dir.join("entry.json");
    make_writable(&record);
    let mut e: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let digest = blake3::hash(b"planted\n").to_hex().to_string();
    e["files"].as_array_mut().unwrap().push(serde_json::json!({
        "name": "../../../lines.txt", "bytes": 8, "blake3": digest
    }));
    std::fs::write(&record, serde_json::to_vec_pretty(&e).unwrap()).unwrap();
    std::fs::remove_dir_all(p.join("outputs/ex8_3_3/corpus")).unwrap();
    let o = seqpipe(p, &["run", "pipelines/ex8_3_3.yaml"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(
        std::fs::read_to_string(p.join("lines.txt")).unwrap(),
        "a project file\n",
        "{out}\n{err}"
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("not a plain file name"), "{err}");
    assert_eq!(ran(p, "ex8_3_3"), ["corpus"], "{out}");
}

#[test]
fn switching_a_view_to_a_new_entry_keeps_a_users_edits() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    let view = p.join("outputs/ex8_3_3/ngrams");
    // The user replaced one of seqpipe's files by their own and added one of their own.
    let (edited, added) = (view.join("summary.json"), view.join("my_notes.md"));
    std::fs::remove_file(&edited).unwrap();
    std::fs::write(&edited, "{\"mine\": true}\n").unwrap();
    std::fs::write(&added, "my notes\n").unwrap();
    // A changed param: the view now shows another entry.
    let out = ok(
        p,
        &[
            "run",
            "pipelines/ex8_3_3.yaml",
            "--set",
            "ngrams.top_fraction=0.2",
        ],
    );
    assert!(out.contains("ran"), "{out}");
    let stray = p.join("outputs/ex8_3_3/.stray/ngrams");
    assert_eq!(
        std::fs::read_to_string(stray.join("summary.json")).unwrap(),
        "{\"mine\": true}\n",
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(stray.join("my_notes.md")).unwrap(),
        "my notes\n"
    );
    assert!(ok(p, &["verify"]).contains("0 damaged"));
}

#[test]
fn a_wait_on_another_runs_claim_is_bounded_and_names_the_claim() {
    let t = project();
    let p = t.path();
    std::fs::write(
        p.join("long.yaml"),
        tiny_lm(100_000, "").replace("name: tiny", "name: long"),
    )
    .unwrap();
    let mut first = Guard(Some(spawn_run(p, &["run", "-q", "long.yaml"])));
    wait_for_training(p, first.get());
    let o = Command::new(BIN)
        .args(["run", "long.yaml"])
        .current_dir(p)
        .env("NO_COLOR", "1")
        .env("SEQPIPE_CLAIM_WAIT", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("gave up after 2 s waiting for key"), "{err}");
    assert!(
        err.contains("outputs/.seqpipe/claims/") && err.contains(".claim is held by"),
        "{err}"
    );
    drop(first);
}
