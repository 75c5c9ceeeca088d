//! The remote store (`--remote`), through a folder and through a real S3-compatible server
//! (moto's, started here on 127.0.0.1 as the cluster tests use a real Slurm): two projects
//! with no common filesystem share results byte for byte; a flipped blob is never served and
//! is repaired; a server that dies mid-run costs a warning, not the run; two pushers race.
//!
//! The S3 tests need `python3 -m moto.server` (scripts/test.sh installs `moto[server]`): without
//! it they FAIL, unless SEQPIPE_TEST_NO_S3=1 says to skip them.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// moto's S3 server on a free port of 127.0.0.1, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// `None` only when SEQPIPE_TEST_NO_S3=1; a missing moto fails the test.
    fn start() -> Option<Moto> {
        if std::env::var("SEQPIPE_TEST_NO_S3").is_ok_and(|v| v == "1") {
            eprintln!("SEQPIPE_TEST_NO_S3=1: the S3 remote tests are skipped");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (the S3 tests need it; SEQPIPE_TEST_NO_S3=1 skips them)");
        let mut m = Moto { child, port };
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(m.child.stderr.as_mut().unwrap(), &mut err);
                panic!(
                    "moto's S3 server did not start ({status}): {err}\nscripts/test.sh \
                     installs it (pip install 'moto[server]'); SEQPIPE_TEST_NO_S3=1 skips these \
                     tests"
                );
            }
            assert!(
                t.elapsed().as_secs() < 60,
                "moto did not listen within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(m)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Run a few lines of boto3 (moto's own dependency) against this server, `s3` in scope.
    fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='{}', \
             aws_access_key_id='test', aws_secret_access_key='test', \
             region_name='us-east-1')\n{code}\n",
            self.endpoint()
        );
        let o = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// A fresh bucket; returns its name.
    fn bucket(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "seqpipe-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        self.boto(&format!("s3.create_bucket(Bucket='{name}')"));
        name
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where results are shared in a test: a folder, or a bucket of a moto server.
enum Remote {
    Dir(tempfile::TempDir),
    S3(Moto, String),
}

impl Remote {
    fn dir() -> Remote {
        Remote::Dir(tempfile::tempdir().unwrap())
    }

    fn s3() -> Option<Remote> {
        let m = Moto::start()?;
        let b = m.bucket();
        Some(Remote::S3(m, b))
    }

    fn url(&self) -> String {
        match self {
            Remote::Dir(d) => d.path().join("shared").display().to_string(),
            Remote::S3(_, b) => format!("s3://{b}/team"),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut e = vec![("SEQPIPE_REMOTE", self.url())];
        if let Remote::S3(m, _) = self {
            e.extend([
                ("AWS_ENDPOINT_URL", m.endpoint()),
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ALLOW_HTTP", "true".into()),
            ]);
        }
        e
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(dir).env("NO_COLOR", "1");
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    /// Run seqpipe with this remote; (success, stdout, stderr).
    fn run(&self, dir: &Path, args: &[&str]) -> (bool, String, String) {
        let o = self.cmd(dir, args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> (String, String) {
        let (good, out, err) = self.run(dir, args);
        assert!(good, "seqpipe {args:?} failed:\n{out}\n{err}");
        (out, err)
    }

    /// Replace the blob of this digest on the remote with other bytes of the same length, as
    /// a bad disk or a co-user would (through the S3 API on S3).
    fn flip_blob(&self, digest: &str, len: usize) {
        let rel = format!("blobs/{}/{digest}", &digest[..2]);
        let bad: Vec<u8> = vec![b'#'; len];
        match self {
            Remote::Dir(_) => {
                let p = PathBuf::from(self.url()).join(rel);
                assert!(p.exists(), "{} is on the remote", p.display());
                std::fs::write(p, bad).unwrap();
            }
            Remote::S3(m, b) => {
                m.boto(&format!(
                    "s3.head_object(Bucket='{b}', Key='team/{rel}')\n\
                     s3.put_object(Bucket='{b}', Key='team/{rel}', Body=b'#' * {len})"
                ));
            }
        }
    }

    /// The record objects on the remote.
    fn records(&self) -> usize {
        match self {
            Remote::Dir(_) => std::fs::read_dir(PathBuf::from(self.url()).join("records"))
                .map(|rd| {
                    rd.map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count())
                        .sum()
                })
                .unwrap_or(0),
            Remote::S3(m, b) => m
                .boto(&format!(
                    "r = s3.list_objects_v2(Bucket='{b}', Prefix='team/records/')\n\
                     print(r.get('KeyCount', 0))"
                ))
                .trim()
                .parse()
                .unwrap(),
        }
    }
}

/// Two trees (as `tree` lists them) are the same: names the first difference, not every byte.
fn same_tree(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) {
    let names = |t: &[(String, Vec<u8>)]| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    for ((n, x), (_, y)) in a.iter().zip(b) {
        assert!(x == y, "{n} differs");
    }
}

/// The statuses of the last run of `tiny`.
fn statuses_of(p: &Path) -> Vec<String> {
    last_run(p, "tiny").into_iter().map(|(_, s)| s).collect()
}

/// The digest and size of the largest file of a project's `tiny` entries (a blob on the
/// remote: small files travel inside their records).
fn largest_file(p: &Path) -> (String, usize) {
    let mut best = (String::new(), 0);
    for (stage, _) in last_run(p, "tiny") {
        let e: serde_json::Value = serde_json::from_slice(
            &std::fs::read(entry_dir(p, "tiny", &stage).join("entry.json")).unwrap(),
        )
        .unwrap();
        for f in e["files"].as_array().unwrap() {
            let n = f["bytes"].as_u64().unwrap() as usize;
            if n > best.1 {
                best = (f["blake3"].as_str().unwrap().to_string(), n);
            }
        }
    }
    assert!(best.1 > 64 << 10, "{best:?} is a blob");
    best
}

/// A runs and pushes; B, a fresh copy with an empty store, runs nothing (all pulled) and gets
/// byte-identical views; a blob flipped on the remote is refused on pull, recomputed, and
/// repaired, so that C pulls everything again.
fn share_verify_and_repair(r: &Remote) {
    let a = tiny_project(2);
    let (out, _) = r.ok(a.path(), &["run", "tiny.yaml"]);
    assert!(out.contains("pushed 6 entries"), "{out}");
    assert!(statuses_of(a.path()).iter().all(|s| s == "ran"));
    assert_eq!(r.records(), 6);

    let b = tiny_project(2);
    let (out, _) = r.ok(b.path(), &["run", "tiny.yaml"]);
    assert!(out.contains("0 ran, 6 pulled, 0 cached"), "{out}");
    assert!(statuses_of(b.path()).iter().all(|s| s == "pulled"));
    same_tree(
        &tree(&a.path().join("outputs")),
        &tree(&b.path().join("outputs")),
    );
    ok(b.path(), &["verify"]);
    // A second run is served by the local store.
    let (out, _) = r.ok(b.path(), &["run", "tiny.yaml"]);
    assert!(out.contains("0 ran, 0 pulled, 6 cached"), "{out}");

    // A blob flipped on the remote: never served, recomputed, repaired.
    let (digest, len) = largest_file(a.path());
    r.flip_blob(&digest, len);
    let c = tiny_project(2);
    let (out, err) = r.ok(c.path(), &["run", "tiny.yaml"]);
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(
        err.contains("recomputed here and the repaired result pushed"),
        "{err}"
    );
    // Blobs are shared by content: every entry holding those bytes is recomputed, no other.
    let holders: Vec<String> = last_run(a.path(), "tiny")
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| {
            std::fs::read_to_string(entry_dir(a.path(), "tiny", n).join("entry.json"))
                .unwrap()
                .contains(&digest)
        })
        .collect();
    assert!(!holders.is_empty() && holders.len() < 6, "{holders:?}");
    // Their records are on the remote already: the re-push is refused (412 on S3, an existing
    // link on a folder) and only the bad blob is sent again.
    assert!(!out.contains("pushed "), "{out}");
    assert_eq!(
        ran(c.path(), "tiny"),
        holders,
        "only the damaged entries run: {out}"
    );
    same_tree(
        &tree(&a.path().join("outputs")),
        &tree(&c.path().join("outputs")),
    );
    let d = tiny_project(2);
    let (out, err) = r.ok(d.path(), &["run", "tiny.yaml"]);
    assert!(
        out.contains("0 ran, 6 pulled"),
        "the repair was pushed: {out}\n{err}"
    );
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn a_folder_remote_shares_results_verified_and_repaired() {
    share_verify_and_repair(&Remote::dir());
}

#[test]
fn an_s3_remote_shares_results_verified_and_repaired() {
    if let Some(r) = Remote::s3() {
        share_verify_and_repair(&r);
    }
}

/// Several projects that computed the same results push at once: every push succeeds, each
/// record is written exactly once (the first wins), and a fresh project pulls all of them.
fn concurrent_pushers(r: &Remote) {
    let projects: Vec<_> = (0..3).map(|_| trained_tiny(1)).collect();
    let children: Vec<Child> = projects
        .iter()
        .map(|p| {
            r.cmd(p.path(), &["push"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pushed = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let n: usize = out
            .split("push: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        pushed += n;
    }
    assert_eq!(
        pushed, 6,
        "each of the 6 records is written by exactly one pusher"
    );
    assert_eq!(r.records(), 6);
    let fresh = tiny_project(1);
    let (out, _) = r.ok(fresh.path(), &["pull", "tiny.yaml"]);
    assert!(out.contains("pull: 6 entries pulled"), "{out}");
    let (out, _) = r.ok(fresh.path(), &["run", "tiny.yaml"]);
    assert!(out.contains("0 ran, 0 pulled, 6 cached"), "{out}");
    // Each training timed itself (speed.csv, in its entry): the record that won is one of
    // the pushers' whole, and everything else is the same bytes everywhere.
    let no_speed = |p: &Path| -> Vec<(String, Vec<u8>)> {
        tree(&p.join("outputs"))
            .into_iter()
            .filter(|(n, _)| !n.ends_with("speed.csv"))
            .collect()
    };
    same_tree(&no_speed(projects[0].path()), &no_speed(fresh.path()));
    let speed = |p: &Path| std::fs::read(p.join("outputs/tiny/train/speed.csv")).unwrap();
    assert!(projects
        .iter()
        .any(|p| speed(p.path()) == speed(fresh.path())));
}

#[test]
fn concurrent_pushers_to_a_folder_write_each_record_once() {
    concurrent_pushers(&Remote::dir());
}

#[test]
fn concurrent_pushers_to_s3_write_each_record_once() {
    if let Some(r) = Remote::s3() {
        concurrent_pushers(&r);
    }
}

/// The upstream stages are on the server; the server dies while the model trains: the run
/// ends well, with a warning, its results computed here. With --remote-required, a dead
/// server fails the run.
#[test]
fn a_server_killed_mid_run_costs_a_warning_not_the_run() {
    let Some(mut r) = Remote::s3() else { return };
    let a = tiny_project(3);
    r.ok(a.path(), &["run", "tiny.yaml", "batches"]);
    let b = tiny_project(3);
    let mut child = r
        .cmd(b.path(), &["run", "tiny.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the progress lines until a stage starts running here, then kill the server.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if l.trim_start().starts_with("run ") {
            if let Remote::S3(m, _) = &mut r {
                m.kill();
            }
            break;
        }
    }
    seen.extend(lines.map(|l| l.unwrap() + "\n"));
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{seen}\n{err}");
    assert!(seen.contains("pulled  batches"), "{seen}");
    assert_eq!(ran(b.path(), "tiny"), vec!["model", "train"], "{seen}");
    assert_eq!(
        err.matches("warning: remote").count(),
        1,
        "one warning: {err}"
    );
    assert!(err.contains("going on without it"), "{err}");

    // The server is gone: required, the run fails and says why.
    let c = tiny_project(3);
    let (good, _, err) = r.run(c.path(), &["run", "tiny.yaml", "--remote-required"]);
    assert!(!good);
    assert!(err.contains("--remote-required"), "{err}");
    // Not required, it computes everything here.
    let (out, err) = r.ok(c.path(), &["run", "-q", "tiny.yaml"]);
    assert!(out.contains("6 ran, 0 pulled"), "{out}");
    assert_eq!(err.matches("warning: remote").count(), 1, "{err}");
}

/// `gc --remote` removes the records no pipeline in pipelines/ reaches once old enough, and
/// leaves the blobs of the grace period; what it removed is a miss, never a broken pull.
#[test]
fn gc_on_a_remote_removes_unreachable_records() {
    let Some(r) = Remote::s3() else { return };
    let a = tiny_project(1);
    r.ok(a.path(), &["run", "-q", "tiny.yaml"]);
    let url = r.url();
    let (out, _) = r.ok(a.path(), &["gc", "--remote", &url, "--older-than", "1"]);
    assert!(out.contains("removed 0 records and 0 blobs"), "{out}");
    let (out, _) = r.ok(
        a.path(),
        &["gc", "--remote", &url, "--older-than", "0", "--dry-run"],
    );
    // tiny's corpus stage is also a stage of the shipped pipelines (reachable: kept).
    assert!(out.contains("would remove 5 records and 0 blobs"), "{out}");
    assert!(out.contains("kept 1 records"), "{out}");
    assert_eq!(r.records(), 6);
    let (out, _) = r.ok(a.path(), &["gc", "--remote", &url, "--older-than", "0"]);
    assert!(out.contains("removed 5 records and 0 blobs"), "{out}");
    assert_eq!(r.records(), 1);
    let b = tiny_project(1);
    let (out, err) = r.ok(b.path(), &["run", "-q", "tiny.yaml"]);
    assert!(out.contains("5 ran, 1 pulled"), "{out}");
    assert!(!err.contains("warning"), "{err}");
}

/// `run --dry-run` with a remote says which hits would be pulled from it, fetches no blob and
/// writes nothing; a remote that is not there leaves the local plan, with a warning.
#[test]
fn a_dry_run_says_what_the_remote_would_serve_and_writes_nothing() {
    let r = Remote::dir();
    let a = tiny_project(2);
    r.ok(a.path(), &["run", "-q", "tiny.yaml"]);
    let b = tiny_project(2);
    let before = tree(b.path());
    let (out, _) = r.ok(b.path(), &["run", "--dry-run", "tiny.yaml"]);
    assert!(out.contains("6 stages, 0 to run, 6 cached"), "{out}");
    assert!(
        out.contains("6 of the hits above would be pulled from it:"),
        "{out}"
    );
    assert_eq!(tree(b.path()), before, "a dry run wrote something");
    // Without the remote the same project would run everything.
    let o = seqpipe(b.path(), &["run", "--dry-run", "tiny.yaml"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("6 to run, 0 cached"), "{out}");
    // One stage changed here: the rest still comes from the remote, that one runs.
    let (out, _) = r.ok(
        b.path(),
        &["run", "--dry-run", "tiny.yaml", "--set", "train.lr=0.5"],
    );
    assert!(out.contains("would be pulled from it"), "{out}");
    assert!(!out.contains(" 0 to run"), "{out}");
    // A remote that is not reachable: a warning, and this store's plan.
    let gone = b.path().join("no-such-remote.txt");
    std::fs::write(&gone, "a file, not a folder").unwrap();
    let o = Command::new(BIN)
        .args(["run", "--dry-run", "tiny.yaml", "--remote"])
        .arg(&gone)
        .current_dir(b.path())
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("6 to run"), "{out}");
    assert!(
        out.contains("not reachable, so the plan above is this store's"),
        "{out}"
    );
    assert!(err.contains("warning: remote"), "{err}");
}
