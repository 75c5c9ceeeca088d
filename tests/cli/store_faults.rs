//! The store's guarantees under faults: damage, views, --force, checkpoints, leftovers of killed
//! runs, run announcements, and a store that cannot be read or written.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("coverage.csv has 9 bytes") && err.contains("quarantined"),
        "{err}"
    );
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
fn verify_tells_a_view_without_its_entry_from_damage() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    // As another project's gc on a shared store, or a hand-deleted folder, leaves it.
    std::fs::remove_dir_all(entry_dir(p, "ex8_3_3", "report")).unwrap();
    let v = seqpipe(p, &["verify"]);
    let vout = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(0), "{vout}");
    assert!(
        vout.contains("0 damaged, 1 view(s) without an entry")
            && vout.contains("report shows entry")
            && vout.contains("no longer in the store")
            && !vout.contains("damaged  "),
        "{vout}"
    );
    assert!(p.join("outputs/ex8_3_3/report/report.md").exists());
    let out = ok(p, &["run", "pipelines/ex8_3_3.yaml"]);
    assert!(out.contains("1 ran, 4 cached"), "{out}");
    let v = ok(p, &["verify"]);
    assert!(
        v.contains("0 damaged") && !v.contains("without an entry"),
        "{v}"
    );
}

/// Flip one byte in place (same size, same inode), as a bad disk or a stray write would.
fn flip_byte(f: &Path, at: usize) {
    make_writable(f);
    let mut b = std::fs::read(f).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x20;
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .and_then(|mut h| std::io::Write::write_all(&mut h, &b))
        .unwrap();
}

#[test]
fn a_flipped_byte_is_never_served_and_verify_finds_it() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    assert!(ok(p, &["verify"]).contains("0 damaged"));
    // Same size, one bit: a size check would serve it.
    let f = entry_dir(p, "ex8_2_2", "chars").join("tokens.json");
    let before = std::fs::read(&f).unwrap();
    flip_byte(&f, 1000);
    let v = seqpipe(p, &["verify"]);
    assert_eq!(v.status.code(), Some(1));
    let vout = String::from_utf8_lossy(&v.stdout);
    assert!(
        vout.contains("stage `chars`") && vout.contains("tokens.json does not match its digest"),
        "{vout}"
    );
    let o = seqpipe(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tokens.json does not match its digest"),
        "{err}"
    );
    assert_eq!(
        ran(p, "ex8_2_2"),
        ["chars"],
        "only the damaged stage recomputes"
    );
    assert_eq!(
        std::fs::read(p.join("outputs/ex8_2_2/chars/tokens.json")).unwrap(),
        before
    );
    assert!(ok(p, &["verify"]).contains("0 damaged"));
    assert_eq!(
        std::fs::read_dir(p.join("outputs/.seqpipe/quarantine"))
            .unwrap()
            .count(),
        1,
        "the damaged entry is set aside, not served"
    );
    // verify --repair removes a damaged entry; the next run recomputes it.
    flip_byte(&entry_dir(p, "ex8_2_2", "vocab_char").join("vocab.csv"), 10);
    let r = ok(p, &["verify", "--repair"]);
    assert!(r.contains("entry") && r.contains("removed"), "{r}");
    assert!(ok(p, &["verify"]).contains("0 damaged"));
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    assert_eq!(ran(p, "ex8_2_2"), ["vocab_char"]);
}

#[test]
fn views_are_links_checked_and_rebuilt_on_every_run() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    let view = p.join("outputs/ex8_2_2/vocab_word/vocab.csv");
    let good = std::fs::read(&view).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let store = entry_dir(p, "ex8_2_2", "vocab_word").join("vocab.csv");
        assert_eq!(
            std::fs::metadata(&view).unwrap().ino(),
            std::fs::metadata(&store).unwrap().ino(),
            "the view is a hard link to the store's file, not a second copy"
        );
        assert!(std::fs::metadata(&store).unwrap().permissions().readonly());
    }
    // An editor that writes a new file in place of the view's.
    std::fs::remove_file(&view).unwrap();
    std::fs::write(&view, "edited\n").unwrap();
    // A deleted file and a stray one in another view.
    std::fs::remove_file(p.join("outputs/ex8_2_2/chars/summary.json")).unwrap();
    std::fs::write(p.join("outputs/ex8_2_2/words/extra.txt"), "x").unwrap();
    let v = seqpipe(p, &["verify"]);
    assert_eq!(v.status.code(), Some(1));
    let vout = String::from_utf8_lossy(&v.stdout);
    assert!(vout.contains("vocab.csv differs"), "{vout}");
    assert!(vout.contains("summary.json is missing"), "{vout}");
    assert!(
        vout.contains("extra.txt is not part of the entry"),
        "{vout}"
    );
    let out = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(
        out.contains("0 ran"),
        "views are rebuilt from the store: {out}"
    );
    assert_eq!(std::fs::read(&view).unwrap(), good);
    assert!(p.join("outputs/ex8_2_2/chars/summary.json").exists());
    assert!(!p.join("outputs/ex8_2_2/words/extra.txt").exists());
    assert!(ok(p, &["verify"]).contains("0 damaged"));
    // An edit in place through the link damages the store's file: caught and recomputed.
    flip_byte(&view, 3);
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    assert!(ran(p, "ex8_2_2").contains(&"vocab_word".to_string()));
    assert_eq!(std::fs::read(&view).unwrap(), good);
}

#[test]
fn a_repaired_view_says_why_and_moves_strange_files_aside() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_2_2.yaml"]);
    let base = p.join("outputs/ex8_2_2");
    std::fs::remove_dir_all(base.join("chars")).unwrap();
    std::fs::write(base.join("chars"), "mine\n").unwrap();
    std::fs::write(base.join("words/extra.txt"), "x").unwrap();
    std::fs::remove_file(base.join("corpus/lines.txt")).unwrap();
    let v = seqpipe(p, &["verify"]);
    assert_eq!(v.status.code(), Some(1));
    let vout = String::from_utf8_lossy(&v.stdout);
    assert!(vout.contains("lines.txt is missing"), "{vout}");
    assert!(
        vout.contains("extra.txt is not part of the entry"),
        "{vout}"
    );
    assert!(
        vout.contains("ex8_2_2/chars: is a file, not the view's folder"),
        "{vout}"
    );
    let out = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(out.contains("0 ran"), "{out}");
    let line = |s: &str| {
        out.lines()
            .find(|l| l.split_whitespace().take(2).eq(["view", s]))
            .unwrap_or_else(|| panic!("no `view {s}` line in:\n{out}"))
            .to_string()
    };
    assert!(
        line("chars")
            .ends_with("rebuilt (was a file; moved it to outputs/ex8_2_2/.stray/chars/chars)"),
        "{out}"
    );
    assert!(
        line("corpus").ends_with("rebuilt (lines.txt was missing)"),
        "{out}"
    );
    assert!(
        line("words").ends_with(
            "rebuilt (extra.txt was not part of the entry; moved it to outputs/ex8_2_2/.stray/words/extra.txt)"
        ),
        "{out}"
    );
    assert_eq!(out.matches("  view  ").count(), 3, "{out}");
    assert_eq!(
        std::fs::read(base.join(".stray/chars/chars")).unwrap(),
        b"mine\n"
    );
    assert_eq!(
        std::fs::read(base.join(".stray/words/extra.txt")).unwrap(),
        b"x"
    );
    assert!(base.join("chars/.key").exists() && base.join("corpus/lines.txt").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".old-") || n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(ok(p, &["verify"]).contains("0 damaged"));
    let again = ok(p, &["run", "pipelines/ex8_2_2.yaml"]);
    assert!(!again.contains("  view  "), "{again}");
}

#[test]
fn force_replaces_the_entry_and_the_new_result_wins() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    let f = entry_dir(p, "ex8_3_3", "words").join("tokens.json");
    let good = std::fs::read(&f).unwrap();
    flip_byte(&f, 50);
    ok(
        p,
        &["run", "-q", "pipelines/ex8_3_3.yaml", "--force", "words"],
    );
    let r = ran(p, "ex8_3_3");
    assert!(r.contains(&"words".to_string()) && r.len() == 4, "{r:?}");
    assert_eq!(
        std::fs::read(entry_dir(p, "ex8_3_3", "words").join("tokens.json")).unwrap(),
        good
    );
    assert!(ok(p, &["verify"]).contains("0 damaged"));
}

/// A run of `tiny.yaml` killed once a checkpoint after `at_least` epochs exists; returns the
/// checkpoint folder.
fn killed_training(p: &Path, epochs: usize, at_least: u64, extra_args: &[&str]) -> PathBuf {
    std::fs::write(p.join("tiny.yaml"), tiny_lm(epochs, "")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-q", "tiny.yaml"])
        .args(extra_args)
        .current_dir(p)
        .spawn()
        .unwrap();
    let ckpts = p.join("outputs/.seqpipe/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dir = loop {
        let found = std::fs::read_dir(&ckpts)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let d = e.ok()?.path().join("ckpt");
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(d.join("manifest.json")).ok()?).ok()?;
                (m["epochs_done"].as_u64()? >= at_least).then_some(d)
            })
            .next();
        if let Some(d) = found {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    dir
}

/// Remove the store entry of stage kind `kind` if there is one (at most one), as if its run had
/// been interrupted before the commit: the next run computes it, from a checkpoint if any.
fn drop_entry(p: &Path, kind: &str) {
    let objects = p.join("outputs/.seqpipe/objects");
    let mut dropped = 0;
    for shard in std::fs::read_dir(&objects).unwrap() {
        for e in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let d = e.unwrap().path();
            let rec: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("entry.json")).unwrap()).unwrap();
            if rec["record"]["kind"] == kind {
                std::fs::remove_dir_all(&d).unwrap();
                dropped += 1;
            }
        }
    }
    assert!(dropped <= 1, "{dropped} entries of kind {kind}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_damaged_checkpoint_is_refused_and_training_starts_over() {
    let epochs = 40;
    let reference = trained_tiny(epochs);
    let same_as_reference = |p: &Path| {
        let files = [
            "metrics.csv",
            "model.safetensors",
            "samples.txt",
            "log.txt",
            "summary.json",
        ];
        same_training(reference.path(), p, &files, "from the uninterrupted run");
    };
    let t = project();
    let p = t.path();
    // After epoch 6: the checkpoint holds the sample of epoch 5, which log.txt must keep.
    let ckpt = killed_training(p, epochs, 6, &[]);
    let saved = p.join("saved-ckpt");
    copy_dir(&ckpt, &saved);
    // Each damage: the run warns, trains from scratch, and commits what an uninterrupted run
    // commits (a bad checkpoint must never be half applied).
    let rewrite_progress = |d: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("progress.json")).unwrap()).unwrap();
        f(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap();
        std::fs::write(d.join("progress.json"), &bytes).unwrap();
        // Keep the manifest consistent, so that the check after the digest is the one tried.
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
        m["files"]["progress.json"] = blake3::hash(&bytes).to_hex().to_string().into();
        if let Some(e) = v["epochs_done"].as_u64() {
            m["epochs_done"] = e.into();
        }
        std::fs::write(d.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    };
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a flipped weight",
            Box::new(|d: &Path| flip_byte(&d.join("model.safetensors"), 400)),
            "model.safetensors does not match its digest",
        ),
        (
            "a truncated optimizer state",
            Box::new(|d: &Path| {
                let b = std::fs::read(d.join("optimizer.bin")).unwrap();
                std::fs::write(d.join("optimizer.bin"), &b[..b.len() / 2]).unwrap();
            }),
            "optimizer.bin does not match its digest",
        ),
        (
            "epochs_done beyond the configured epochs",
            Box::new(move |d: &Path| rewrite_progress(d, &|v| v["epochs_done"] = 1000.into())),
            "beyond the 40 epochs configured",
        ),
    ];
    for (what, damage, message) in cases {
        let _ = std::fs::remove_dir_all(&ckpt);
        copy_dir(&saved, &ckpt);
        damage(&ckpt);
        drop_entry(p, "train");
        let o = seqpipe(p, &["run", "tiny.yaml"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{what}: {out}");
        assert!(
            out.contains(message) && out.contains("training from scratch"),
            "{what}: {out}"
        );
        assert!(!out.contains("resuming"), "{what}: {out}");
        same_as_reference(p);
        let notes = last_record(p, "tiny")["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "train")
            .unwrap()["notes"]
            .to_string();
        assert!(
            notes.contains(message),
            "{what}: the run record keeps the note: {notes}"
        );
    }
    // An intact one resumes, and the result is the same bytes, log.txt included.
    let _ = std::fs::remove_dir_all(&ckpt);
    copy_dir(&saved, &ckpt);
    drop_entry(p, "train");
    let out = ok(p, &["run", "tiny.yaml"]);
    assert!(
        out.contains("resuming from the checkpoint after epoch"),
        "{out}"
    );
    same_as_reference(p);
}

fn hostname() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn leftovers_of_killed_runs_are_removed_by_run_and_gc() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    let host = hostname();
    let dead = dead_pid();
    let me = std::process::id();
    let base = p.join("outputs/ex8_3_3");
    let dead_dirs = [
        base.join(format!(".tmp-words-1~{host}~{dead}")),
        base.join(format!(".old-words-1~{host}~{dead}")),
        base.join(format!(".tmp-words-{dead}")), // named by an older seqpipe
        p.join(format!("outputs/.seqpipe/tmp/abc-1~{host}~{dead}")),
    ];
    let live_dirs = [
        base.join(format!(".tmp-words-1~{host}~{me}")),
        p.join(format!("outputs/.seqpipe/tmp/abc-1~{host}~{me}")),
    ];
    for d in dead_dirs.iter().chain(&live_dirs) {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
    }
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    for d in &dead_dirs {
        assert!(!d.exists(), "{} should be gone", d.display());
    }
    for d in &live_dirs {
        assert!(d.exists(), "{} belongs to a live process", d.display());
    }
    let d = p.join(format!("outputs/.seqpipe/trash/abc-1~{host}~{dead}"));
    std::fs::create_dir_all(&d).unwrap();
    ok(p, &["gc"]);
    assert!(!d.exists());
}

/// `run tiny.yaml --force train` killed (SIGKILL) once its checkpoint is `epochs` epochs in.
fn killed_forced_training(p: &Path, epochs: u64) {
    let mut child = Command::new(BIN)
        .args(["run", "-q", "tiny.yaml", "--force", "train"])
        .current_dir(p)
        .spawn()
        .unwrap();
    let ckpts = p.join("outputs/.seqpipe/checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done = std::fs::read_dir(&ckpts)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("ckpt/progress.json")).ok())
            .any(|bytes| {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                v["epochs_done"].as_u64().unwrap_or(0) >= epochs
            });
        if done {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the forced run ended before its kill"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// --force recomputes from scratch: a checkpoint an interrupted forced run left is discarded,
/// not resumed; and once the key's entry is committed, gc removes such a checkpoint.
#[test]
fn force_never_resumes_an_old_checkpoint_and_gc_drops_stale_ones() {
    let t = trained_tiny(60);
    let p = t.path();
    let ckpts = p.join("outputs/.seqpipe/checkpoints");
    killed_forced_training(p, 3);
    // The entry is still committed: a plain run serves it, the checkpoint stays behind...
    let out = ok(p, &["run", "tiny.yaml"]);
    assert!(out.contains("0 ran, 6 cached"), "{out}");
    assert_eq!(std::fs::read_dir(&ckpts).unwrap().count(), 1);
    // ...until gc, which drops a checkpoint whose entry is in the store.
    ok(p, &["gc"]);
    assert_eq!(
        std::fs::read_dir(&ckpts).unwrap().count(),
        0,
        "stale checkpoint kept"
    );
    killed_forced_training(p, 3);
    let out = ok(p, &["run", "tiny.yaml", "--force", "train"]);
    assert!(!out.contains("resuming"), "a forced stage resumed: {out}");
    assert!(
        out.contains("forced: an earlier run's checkpoint was discarded"),
        "{out}"
    );
}

/// verify, gc and status read the store: one that is a file, or a named one that does not exist
/// (a typo), is an error, not an empty store that "verifies".
#[test]
fn store_readers_refuse_a_missing_or_file_store() {
    let t = project();
    let p = t.path();
    std::fs::write(p.join("storefile"), "x").unwrap();
    for cmd in [
        vec!["verify"],
        vec!["gc"],
        vec!["status", "pipelines/ex8_3_3.yaml"],
    ] {
        for (store, says) in [
            ("storefile", "is a file, but seqpipe keeps its store"),
            ("no_such_store", "no store at"),
        ] {
            let mut args = vec!["--store", store];
            args.extend(cmd.iter().copied());
            let o = seqpipe(p, &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
    assert!(
        !p.join("no_such_store").exists(),
        "a reader created the store"
    );
    // The default store not existing yet is no error: nothing has run here.
    let out = ok(p, &["verify"]);
    assert!(out.contains("0 entries"), "{out}");
}

/// A run announces its keys in `live/` for gc. Ctrl-C removes the announcement; one left by a
/// run killed with SIGKILL is removed by the next run, and `gc --dry-run` removes nothing.
#[test]
fn run_announcements_do_not_pile_up() {
    let t = project();
    let p = t.path();
    let live = p.join("outputs/.seqpipe/live");
    let count = || std::fs::read_dir(&live).map_or(0, |d| d.count());
    // Ctrl-C.
    let mut run = long_training(p);
    assert_eq!(count(), 1);
    unsafe { libc::kill(run.get().id() as i32, libc::SIGINT) };
    let status = run.take().wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(count(), 0, "Ctrl-C left its announcement");
    // SIGKILL: nothing runs at exit, the file stays...
    let mut run = long_training(p);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never announced itself"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    run.get().kill().unwrap();
    run.take().wait().unwrap();
    assert_eq!(count(), 1);
    // ...through a dry run of gc...
    ok(p, &["gc", "--dry-run"]);
    assert_eq!(count(), 1, "gc --dry-run removed a file");
    // ...and goes with the next run.
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    assert_eq!(count(), 0, "the dead run's announcement stayed");
}

/// Damage messages say what a user can act on: a file replaced by a folder is called that, and
/// a file edited through a view (views share the entry's files) says that the edit is the cause.
#[test]
fn damage_messages_name_folders_and_view_edits() {
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    let view = p.join("outputs/ex8_3_3/report/report.md");
    // As an editor with write access would (root ignores the read-only bit; others chmod).
    let mut perm = std::fs::metadata(&view).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&view, perm).unwrap();
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&view)
        .unwrap()
        .write_all(b"# my note\n")
        .unwrap();
    let o = seqpipe(p, &["verify"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("report.md has") && out.contains("a view under outputs/ is this same file"),
        "{out}"
    );
    ok(p, &["verify", "--repair"]);
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    // A file of an entry replaced by a folder.
    let objects = p.join("outputs/.seqpipe/objects");
    let entry = std::fs::read_dir(&objects)
        .unwrap()
        .flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|d| d.join("zipf.csv").exists())
        .expect("the ngram_stats entry");
    let f = entry.join("zipf.csv");
    let mut perm = std::fs::metadata(&entry).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&entry, perm).unwrap();
    std::fs::remove_file(&f).unwrap();
    std::fs::create_dir(&f).unwrap();
    let o = seqpipe(p, &["verify"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("zipf.csv is a folder, not a file"), "{out}");
}

/// A store that cannot be written is named as such (even a fully cached run writes its claims
/// and run record). Needs root to run seqpipe as another user (`setpriv`); skipped otherwise.
#[test]
fn an_unwritable_store_is_named() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if unsafe { libc::geteuid() } != 0 || !setpriv.exists() {
        eprintln!("SKIPPED an_unwritable_store_is_named: needs root and setpriv");
        return;
    }
    let t = project();
    let p = t.path();
    ok(p, &["run", "-q", "pipelines/ex8_3_3.yaml"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["run", "pipelines/ex8_3_3.yaml"])
        .current_dir(p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be written: every run writes its claims"),
        "{err}"
    );
}
