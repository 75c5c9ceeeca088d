//! A remote store: results shared through a directory or S3-compatible object storage.
//!
//! Layout under the remote's root (a folder, or `s3://bucket/prefix`):
//! - `blobs/<d0d1>/<blake3>`: a file's bytes, addressed by their digest (a push skips a blob
//!   already there);
//! - `records/<k0k1>/<key>.json`: a key's record, the local entry's `entry.json` (the key's
//!   [`KeyRecord`](crate::key::KeyRecord), each file's name, size and digest) with the content
//!   of its small files inline (up to [`INLINE_MAX`] each: one request moves a small entry),
//!   written LAST and
//!   only if absent (`If-None-Match: *` on S3, an exclusive link on a folder): a partial upload
//!   is never visible, and of two pushers the first record wins;
//! - `used/s/<ms>-<pid>.json`: the keys one pull took (for `gc --remote --older-than`).
//!
//! Everything a remote hands back is untrusted: a record is bounded ([`MAX_RECORD`]), parsed,
//! and must hash to the key asked for; file names must be plain names; a blob is read up to
//! the size its record declares and no further; every file is hashed before the entry is
//! committed, through the local store's own [`Store::commit`] (which hashes it again). A blob
//! that is missing or damaged makes the key a miss: the stage is recomputed, and its result is
//! pushed over the bad blob (and over the record, once the record there is checked bad again).
//!
//! Failures (unreachable, timeouts, 5xx) are misses: one warning, and the run goes on locally;
//! `--remote-required` makes them errors. The backends ([`dir`], [`s3`]) sit behind the small
//! synchronous [`Remote`] trait; the S3 one keeps its tokio runtime to itself.

pub mod dir;
pub mod s3;

use crate::cache::{Entry, Lookup, Store, ENTRY, ENTRY_FORMAT};
use crate::claim::{ClaimInfo, TryClaim};
use crate::fsutil::is_plain_name;
use crate::key::Key;
use anyhow::{bail, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The most a remote record may hold (it lists a stage's few files).
pub const MAX_RECORD: u64 = 1 << 20;
/// A file up to this size travels inside its key's record, not as a blob.
pub const INLINE_MAX: u64 = 64 << 10;
/// The most file bytes one record carries inline (its base64 must fit in [`MAX_RECORD`]).
pub const INLINE_TOTAL: u64 = 512 << 10;
/// The most a pull's list of used keys may hold.
const MAX_USED: u64 = 16 << 20;
/// Transfers in flight at once.
pub const PARALLEL: usize = 32;
/// A push re-uploads a blob last written longer ago than this instead of skipping it: a blob
/// `gc` could remove (unreferenced for [`BLOB_GRACE_MIN`]) is never relied upon by a new record.
pub const REFRESH: Duration = Duration::from_secs(3600);
/// `gc --remote` never removes a blob written more recently than this, whatever `--older-than`
/// says: a pusher that found it fresh (younger than [`REFRESH`]) may be about to write a record
/// naming it.
pub const BLOB_GRACE_MIN: Duration = Duration::from_secs(86400);

/// What a backend can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Unreachable, a timeout, a server error, a refusal: the remote cannot be used now.
    #[error("{0}")]
    Failed(String),
    /// An object longer than the most its reader accepts.
    #[error("{0} has more than the {1} bytes expected")]
    TooBig(String, u64),
}

type RResult<T> = std::result::Result<T, RemoteError>;

/// An object's size and when it was last written.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub size: u64,
    pub modified: SystemTime,
}

/// A remote's objects, by `/`-separated path under its root. Synchronous; safe to call from
/// several threads at once.
pub trait Remote: Send + Sync {
    /// The remote as the user named it (for messages).
    fn url(&self) -> &str;
    /// Copy the object at `path` into `sink`, at most `max` bytes (`TooBig` past that).
    /// `Ok(None)`: there is no such object.
    fn get(&self, path: &str, max: u64, sink: &mut dyn Write) -> RResult<Option<u64>>;
    fn head(&self, path: &str) -> RResult<Option<Meta>>;
    /// Write an object. `create_only`: only if absent, atomically (`Ok(false)`: one was there,
    /// and it is left as it was). Otherwise it replaces what is there, atomically.
    fn put(&self, path: &str, bytes: Vec<u8>, create_only: bool) -> RResult<bool>;
    /// Every object under `prefix` (a folder path ending in `/`), paths relative to the root.
    fn list(&self, prefix: &str) -> RResult<Vec<(String, Meta)>>;
    /// Remove an object (absent is fine).
    fn delete(&self, path: &str) -> RResult<()>;
}

/// Open the remote a user named: a folder (a path or `file://`), or `s3://bucket/prefix`.
pub fn open(url: &str, root: &Path) -> Result<Box<dyn Remote>> {
    if let Some(rest) = url.strip_prefix("s3://") {
        return Ok(Box::new(s3::S3Remote::open(url, rest)?));
    }
    let path = match url.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => Path::new(p).to_path_buf(),
        Some(p) => bail!(
            "remote `{url}`: a file URL names an absolute folder, `file:///{p}`; or give the \
             folder's path"
        ),
        None if url.contains("://") => bail!(
            "remote `{url}`: seqpipe shares results through a folder (a path or file:///path) \
             or S3-compatible storage (s3://bucket/prefix)"
        ),
        None if url.is_empty() => {
            bail!("the remote is empty: give a folder or s3://bucket/prefix")
        }
        None => root.join(url),
    };
    Ok(Box::new(dir::DirRemote::open(url, &path)?))
}

pub fn record_path(key: &Key) -> String {
    format!("records/{}/{}.json", key.prefix(), key.as_str())
}

pub fn blob_path(digest: &str) -> String {
    format!("blobs/{}/{digest}", &digest[..2])
}

/// A record on the remote: the entry, and the content of its small files.
#[derive(serde::Serialize, serde::Deserialize)]
struct RemoteRecord {
    entry: Entry,
    /// File name → base64 of its content.
    #[serde(default)]
    inline: std::collections::BTreeMap<String, String>,
}

/// A checked record: the entry, and its inline files' bytes (checked against their digests
/// only where they are used, like a blob's).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub entry: Entry,
    pub inline: std::collections::HashMap<String, Vec<u8>>,
}

/// Whether `bytes` are the file `f` says: its size and digest.
fn matches(f: &crate::cache::FileInfo, bytes: &[u8]) -> bool {
    bytes.len() as u64 == f.bytes
        && f.blake3.as_deref() == Some(blake3::hash(bytes).to_hex().as_str())
}

/// A blake3 digest as the store writes it: 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    Key::parse(s).is_some()
}

/// Parse and check a record a remote returned for `key`: an entry of this format, for this
/// key, whose key record hashes to the key, whose files are plain, distinct names with
/// digests. The error says what is wrong.
pub fn check_record(bytes: &[u8], key: &Key) -> Result<Fetched, String> {
    use base64::Engine;
    let r: RemoteRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("its record is not valid ({e})"))?;
    let e = r.entry;
    if &e.key != key {
        return Err(format!("its record names key {}", e.key.short()));
    }
    if e.record.key() != *key {
        return Err("its record's inputs and params do not hash to its key".into());
    }
    if e.format != ENTRY_FORMAT {
        return Err(format!(
            "its record is of format {}, this seqpipe reads {ENTRY_FORMAT}",
            e.format
        ));
    }
    if e.stage.len() > 1024 || !e.seconds.is_finite() {
        return Err("its record has a malformed stage name or time".into());
    }
    let mut seen = HashSet::new();
    for f in &e.files {
        if !is_plain_name(&f.name) || f.name == ENTRY || !seen.insert(f.name.as_str()) {
            return Err(format!(
                "its record lists a file named {:?}, which is not a plain file name (or is \
                 listed twice)",
                f.name.chars().take(80).collect::<String>()
            ));
        }
        if !f.blake3.as_deref().is_some_and(is_digest) {
            return Err(format!("its record gives {} no digest", f.name));
        }
    }
    let mut inline = std::collections::HashMap::new();
    for (name, b64) in r.inline {
        let Some(f) = e.files.iter().find(|f| f.name == name) else {
            return Err(format!(
                "its record carries a file {:?} it does not list",
                name.chars().take(80).collect::<String>()
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| format!("its record carries {} in malformed base64", f.name))?;
        inline.insert(name, bytes);
    }
    Ok(Fetched { entry: e, inline })
}

/// Writes through to a file while hashing what passes.
struct Hashing<'a> {
    file: &'a mut std::fs::File,
    hasher: blake3::Hasher,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Run `f` over `items`, `n` at a time, in order of the items; `tick` after each.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    n: usize,
    f: impl Fn(&T) -> R + Sync,
    tick: impl Fn(usize) + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..n.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                *out[i].lock().unwrap() = Some(r);
                tick(done.fetch_add(1, Ordering::SeqCst) + 1);
            });
        }
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap().expect("every item ran"))
        .collect()
}

/// How a key's pull went.
#[derive(Debug)]
pub enum Pulled {
    /// Committed locally (bytes fetched).
    Yes(u64),
    /// Not on the remote.
    Absent,
    /// On the remote but unusable: the reason (warned; the key is recomputed and repaired).
    Damaged(String),
    /// Another run here holds the key's claim (it computes or pulls it).
    Busy,
    /// Already in the local store.
    Local,
}

/// How a key's push went.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The record was written by this push (blobs sent: count and bytes).
    Yes(usize, u64),
    /// A record was there first (it wins).
    There,
    /// A record whose blobs were bad was replaced.
    Repaired(usize, u64),
}

/// A run's link to a remote: pulls on a miss, pushes after a commit, and says (once) when the
/// remote cannot be used.
pub struct Link {
    remote: Box<dyn Remote>,
    store: Arc<Store>,
    required: bool,
    quiet: bool,
    /// Why the remote was given up for this run (warned once).
    down: Mutex<Option<String>>,
    /// Keys committed from the remote by this run.
    pulled: Mutex<HashSet<Key>>,
    /// Keys whose remote copy was found damaged: their push may replace the record.
    repair: Mutex<HashSet<Key>>,
    /// Digests of blobs found damaged or missing: a push sends them whatever is there.
    bad_blobs: Mutex<HashSet<String>>,
    /// Pushes in flight (after a stage commits).
    pushes: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pushed: AtomicUsize,
    pushed_bytes: AtomicU64,
    /// The first error of a push, with `--remote-required`.
    push_error: Mutex<Option<String>>,
}

impl Link {
    pub fn new(remote: Box<dyn Remote>, store: Arc<Store>, required: bool, quiet: bool) -> Self {
        Link {
            remote,
            store,
            required,
            quiet,
            down: Mutex::new(None),
            pulled: Mutex::new(HashSet::new()),
            repair: Mutex::new(HashSet::new()),
            bad_blobs: Mutex::new(HashSet::new()),
            pushes: Mutex::new(Vec::new()),
            pushed: AtomicUsize::new(0),
            pushed_bytes: AtomicU64::new(0),
            push_error: Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        self.remote.url()
    }

    pub fn is_down(&self) -> bool {
        self.down.lock().unwrap().is_some()
    }

    /// A transfer failed: an error with `--remote-required`; else one warning for the run,
    /// and the remote is left alone from then on.
    fn failed(&self, e: &RemoteError) -> Result<()> {
        if self.required {
            bail!(
                "remote {}: {e} (--remote-required: a remote that cannot be used fails the run)",
                self.url()
            );
        }
        let mut down = self.down.lock().unwrap();
        if down.is_none() {
            eprintln!(
                "warning: remote {}: {e}; going on without it (results are computed here and \
                 not pushed; --remote-required makes this an error)",
                self.url()
            );
            *down = Some(e.to_string());
        }
        Ok(())
    }

    fn warn(&self, line: &str) {
        eprintln!("warning: {line}");
    }

    pub fn was_pulled(&self, key: &Key) -> bool {
        self.pulled.lock().unwrap().contains(key)
    }

    /// Fetch the records of `keys` (those not served locally), in parallel: the checked
    /// entries, `None` for a key the remote does not have. A damaged record is warned about and
    /// counts as absent (its key is then recomputed and repaired).
    pub fn records(&self, keys: &[Key]) -> Result<Vec<Option<Fetched>>> {
        if self.is_down() {
            return Ok(vec![None; keys.len()]);
        }
        let got = parallel(
            keys,
            PARALLEL,
            |k| {
                let mut buf = Vec::new();
                match self.remote.get(&record_path(k), MAX_RECORD, &mut buf) {
                    Ok(None) => Ok(None),
                    Ok(Some(_)) => Ok(Some(check_record(&buf, k).map_err(|why| (k.clone(), why)))),
                    Err(RemoteError::TooBig(..)) => Ok(Some(Err((
                        k.clone(),
                        format!("its record has more than {MAX_RECORD} bytes"),
                    )))),
                    Err(e) => Err(e),
                }
            },
            |_| {},
        );
        let mut out = Vec::new();
        for r in got {
            match r {
                Ok(None) => out.push(None),
                Ok(Some(Ok(e))) => out.push(Some(e)),
                Ok(Some(Err((k, why)))) => {
                    self.warn(&format!(
                        "remote entry {}: {why}; it is recomputed here and the repaired result \
                         pushed",
                        k.short()
                    ));
                    self.repair.lock().unwrap().insert(k);
                    out.push(None);
                }
                Err(e) => {
                    self.failed(&e)?;
                    return Ok(vec![None; keys.len()]);
                }
            }
        }
        Ok(out)
    }

    /// Pull the entries `wanted` (records fetched by [`Link::records`]) into the local store,
    /// in parallel, with a progress line every 2 s on long pulls. Returns each key's outcome.
    pub fn pull(
        &self,
        wanted: &[Fetched],
        pipeline: &str,
        out: &crate::progress::Output,
    ) -> Result<Vec<Pulled>> {
        let t0 = Instant::now();
        let last = Mutex::new(Instant::now());
        let bytes = AtomicU64::new(0);
        let results = parallel(
            wanted,
            PARALLEL,
            |e| {
                let r = self.pull_one(e, pipeline);
                if let Ok(Pulled::Yes(b)) = &r {
                    bytes.fetch_add(*b, Ordering::Relaxed);
                }
                r
            },
            |done| {
                let mut l = last.lock().unwrap();
                if l.elapsed() >= Duration::from_secs(2) && !self.quiet {
                    *l = Instant::now();
                    out.println(&format!(
                        "  pulling {done}/{} entries, {:.1} MB, {:.0} s",
                        wanted.len(),
                        bytes.load(Ordering::Relaxed) as f64 / 1e6,
                        t0.elapsed().as_secs_f64()
                    ));
                }
            },
        );
        let mut outcomes = Vec::new();
        for (e, r) in wanted.iter().zip(results) {
            let e = &e.entry;
            match r {
                Ok(Pulled::Damaged(why)) => {
                    self.warn(&format!(
                        "remote entry {} ({}): {why}; it is recomputed here and the repaired \
                         result pushed",
                        e.key.short(),
                        e.stage
                    ));
                    self.repair.lock().unwrap().insert(e.key.clone());
                    outcomes.push(Pulled::Damaged(why));
                }
                Ok(Pulled::Yes(b)) => {
                    self.pulled.lock().unwrap().insert(e.key.clone());
                    outcomes.push(Pulled::Yes(b));
                }
                Ok(o) => outcomes.push(o),
                Err(PullError::Remote(err)) => {
                    self.failed(&err)?;
                    outcomes.push(Pulled::Absent);
                }
                Err(PullError::Local(err)) => return Err(err),
            }
        }
        // Say what was pulled (for `gc --remote`), in one object, best effort.
        let mut used: Vec<Key> = self.pulled.lock().unwrap().iter().cloned().collect();
        if !self.is_down() && !used.is_empty() {
            used.sort();
            let name = format!(
                "used/s/{}-{}-{:08x}.json",
                crate::owner::now_ms(),
                std::process::id(),
                rand::random::<u32>()
            );
            let body = serde_json::to_vec(&used).expect("keys serialise");
            let _ = self.remote.put(&name, body, false);
        }
        Ok(outcomes)
    }

    fn pull_one(&self, got: &Fetched, pipeline: &str) -> Result<Pulled, PullError> {
        if self.is_down() {
            return Ok(Pulled::Absent);
        }
        let e = &got.entry;
        let key = &e.key;
        let info = ClaimInfo::new(key, pipeline, &e.stage);
        let _claim = match self.store.claims().try_claim(&info) {
            Ok(TryClaim::Got(c)) => c,
            Ok(TryClaim::Held(_)) => return Ok(Pulled::Busy),
            Err(err) => return Err(PullError::Local(err.into())),
        };
        if let Lookup::Hit(_) = self.store.lookup(key) {
            return Ok(Pulled::Local);
        }
        let staging = self
            .store
            .staging(key)
            .map_err(|e| PullError::Local(e.into()))?;
        let fetched = self.fetch_files(got, &staging);
        match fetched {
            Ok(Ok(bytes)) => {
                // A damaged local entry is set aside (quarantined) by the commit.
                self.store
                    .commit(&staging, &e.record, &e.stage, e.seconds, false)
                    .map_err(|e| PullError::Local(e.into()))?;
                Ok(Pulled::Yes(bytes))
            }
            Ok(Err(why)) => {
                let _ = std::fs::remove_dir_all(&staging);
                Ok(Pulled::Damaged(why))
            }
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(err)
            }
        }
    }

    /// Download an entry's files into `staging`, each checked against its size and digest.
    /// `Ok(Err(why))`: a blob is missing or damaged.
    fn fetch_files(&self, got: &Fetched, staging: &Path) -> Result<Result<u64, String>, PullError> {
        let mut total = 0;
        for f in &got.entry.files {
            let digest = f.blake3.as_deref().expect("checked by check_record");
            let path = staging.join(&f.name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|err| PullError::Local(err.into()))?;
            let mut w = Hashing {
                file: &mut file,
                hasher: blake3::Hasher::new(),
            };
            let bad = |why: String| {
                self.bad_blobs.lock().unwrap().insert(digest.to_string());
                Ok(Err(format!("{}: {why}", f.name)))
            };
            if let Some(bytes) = got.inline.get(&f.name) {
                if !matches(f, bytes) {
                    return Ok(Err(format!(
                        "{}: the content its record carries does not match its digest",
                        f.name
                    )));
                }
                // (The commit fsyncs every file.)
                w.write_all(bytes)
                    .map_err(|err| PullError::Local(err.into()))?;
                total += f.bytes;
                continue;
            }
            match self.remote.get(&blob_path(digest), f.bytes, &mut w) {
                Ok(None) => return bad("its blob is missing on the remote".into()),
                Ok(Some(n)) if n != f.bytes => {
                    return bad(format!(
                        "its blob has {n} bytes, the record says {}",
                        f.bytes
                    ))
                }
                Ok(Some(_)) => {}
                Err(RemoteError::TooBig(..)) => {
                    return bad(format!(
                        "its blob has more than the {} bytes of the record",
                        f.bytes
                    ))
                }
                Err(err) => return Err(PullError::Remote(err)),
            }
            if w.hasher.finalize().to_hex().as_str() != digest {
                return bad("its blob does not match its digest".into());
            }
            total += f.bytes;
        }
        Ok(Ok(total))
    }

    /// After a stage committed `key`: push it in the background ([`Link::finish`] waits).
    pub fn push_soon(self: &Arc<Self>, key: Key) {
        if self.is_down() {
            return;
        }
        let me = self.clone();
        let h = std::thread::spawn(move || {
            if let Err(e) = me.push_keys(std::slice::from_ref(&key)) {
                *me.push_error.lock().unwrap() = Some(format!("{e:#}"));
            }
        });
        self.pushes.lock().unwrap().push(h);
    }

    /// Wait for the background pushes. Returns how many entries were pushed (and their blob
    /// bytes); an error with `--remote-required` when a push failed.
    pub fn finish(&self) -> Result<(usize, u64)> {
        let hs: Vec<_> = self.pushes.lock().unwrap().drain(..).collect();
        for h in hs {
            let _ = h.join();
        }
        if let Some(e) = self.push_error.lock().unwrap().take() {
            bail!("{e}");
        }
        Ok((
            self.pushed.load(Ordering::SeqCst),
            self.pushed_bytes.load(Ordering::SeqCst),
        ))
    }

    /// Push the local entries `keys` (each verified first), in parallel. Returns each one's
    /// outcome (`None`: not pushed, the remote is down or the entry is not here intact).
    pub fn push_keys(&self, keys: &[Key]) -> Result<Vec<Option<Pushed>>> {
        let got = parallel(keys, PARALLEL, |k| self.push_one(k), |_| {});
        let mut out = Vec::new();
        for r in got {
            match r {
                Ok(p) => {
                    if let Some(Pushed::Yes(_, b) | Pushed::Repaired(_, b)) = &p {
                        self.pushed.fetch_add(1, Ordering::SeqCst);
                        self.pushed_bytes.fetch_add(*b, Ordering::SeqCst);
                    }
                    out.push(p)
                }
                Err(e) => {
                    self.failed(&e)?;
                    out.push(None);
                }
            }
        }
        Ok(out)
    }

    fn push_one(&self, key: &Key) -> RResult<Option<Pushed>> {
        if self.is_down() {
            return Ok(None);
        }
        let dir = match self.store.lookup(key) {
            Lookup::Hit(d) => d,
            _ => return Ok(None),
        };
        let Some(entry) = self.store.entry(key) else {
            return Ok(None);
        };
        let repair = self.repair.lock().unwrap().contains(key);
        // Small files go inside the record; the others are blobs.
        use base64::Engine;
        let mut inline = std::collections::BTreeMap::new();
        let mut budget = INLINE_TOTAL;
        let mut blobs = Vec::new();
        for f in &entry.files {
            if f.bytes <= INLINE_MAX && f.bytes <= budget {
                let content = crate::fsutil::read_bounded(&dir.join(&f.name), f.bytes)
                    .map_err(|e| RemoteError::Failed(format!("reading {}: {e}", f.name)))?;
                if !matches(f, &content) {
                    return Ok(None);
                }
                budget -= f.bytes;
                inline.insert(
                    f.name.clone(),
                    base64::engine::general_purpose::STANDARD.encode(&content),
                );
            } else {
                blobs.push(f);
            }
        }
        // With blobs to send, look first: a record there wins, and its blobs need not go.
        if !repair && !blobs.is_empty() && self.remote.head(&record_path(key))?.is_some() {
            return Ok(Some(Pushed::There));
        }
        let (mut sent, mut bytes) = (0, 0);
        for f in blobs {
            let Some(d) = f.blake3.as_deref() else {
                return Ok(None);
            };
            let must = self.bad_blobs.lock().unwrap().contains(d);
            let fresh = !must
                && self.remote.head(&blob_path(d))?.is_some_and(|m| {
                    m.size == f.bytes && m.modified.elapsed().unwrap_or(Duration::ZERO) < REFRESH
                });
            if fresh {
                continue;
            }
            let content = crate::fsutil::read_bounded(&dir.join(&f.name), f.bytes)
                .map_err(|e| RemoteError::Failed(format!("reading {}: {e}", f.name)))?;
            self.remote.put(&blob_path(d), content, false)?;
            sent += 1;
            bytes += f.bytes;
        }
        let body =
            serde_json::to_vec(&RemoteRecord { entry, inline }).expect("a record serialises");
        if self.remote.put(&record_path(key), body.clone(), true)? {
            return Ok(Some(Pushed::Yes(sent, bytes)));
        }
        if !repair {
            return Ok(Some(Pushed::There));
        }
        // A record is there and this run found the key's remote copy damaged: replace it only
        // if it is still bad now (someone may have repaired it meanwhile).
        if self.remote_entry_is_sound(key)? {
            return Ok(Some(Pushed::There));
        }
        self.remote.put(&record_path(key), body, false)?;
        Ok(Some(Pushed::Repaired(sent, bytes)))
    }

    /// Whether the remote's record of `key` is well formed and every blob it names is there
    /// and matches its digest (each downloaded and hashed).
    fn remote_entry_is_sound(&self, key: &Key) -> RResult<bool> {
        let mut buf = Vec::new();
        match self.remote.get(&record_path(key), MAX_RECORD, &mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(RemoteError::TooBig(..)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let Ok(got) = check_record(&buf, key) else {
            return Ok(false);
        };
        for f in &got.entry.files {
            if let Some(bytes) = got.inline.get(&f.name) {
                if !matches(f, bytes) {
                    return Ok(false);
                }
                continue;
            }
            let d = f.blake3.as_deref().unwrap_or_default();
            let mut h = HashSink(blake3::Hasher::new());
            match self.remote.get(&blob_path(d), f.bytes, &mut h) {
                Ok(Some(n)) if n == f.bytes && h.0.finalize().to_hex().as_str() == d => {}
                Ok(_) | Err(RemoteError::TooBig(..)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Pull what a run of `keys` can take from the remote: the records of the keys the local
    /// store lacks, then (`wanted` decides, given which keys the remote has) the entries.
    /// Returns the count pulled.
    /// The remote's checked records of those `keys` this store does not serve (each once).
    pub fn missing_records(&self, keys: &[Key]) -> Result<Vec<Fetched>> {
        let mut missing: Vec<Key> = keys
            .iter()
            .filter(|k| !matches!(self.store.lookup(k), Lookup::Hit(_)))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.records(&missing)?.into_iter().flatten().collect())
    }

    pub fn pull_for(
        &self,
        keys: &[Key],
        wanted: impl Fn(&HashSet<Key>) -> HashSet<Key>,
        pipeline: &str,
        out: &crate::progress::Output,
    ) -> Result<usize> {
        let recs = self.missing_records(keys)?;
        if recs.is_empty() {
            return Ok(0);
        }
        let on_remote: HashSet<Key> = recs.iter().map(|e| e.entry.key.clone()).collect();
        let take = wanted(&on_remote);
        let entries: Vec<Fetched> = recs
            .into_iter()
            .filter(|e| take.contains(&e.entry.key))
            .collect();
        let got = self.pull(&entries, pipeline, out)?;
        Ok(got.iter().filter(|p| matches!(p, Pulled::Yes(_))).count())
    }

    /// Every record on the remote (`gc`): (key, when written, last used).
    fn all_records(&self) -> RResult<Vec<(Key, SystemTime)>> {
        let mut out = Vec::new();
        for (p, m) in self.remote.list("records/")? {
            let name = p.rsplit('/').next().unwrap_or_default();
            if let Some(k) = name.strip_suffix(".json").and_then(Key::parse) {
                if p == record_path(&k) {
                    out.push((k, m.modified));
                }
            }
        }
        Ok(out)
    }

    /// `seqpipe gc --remote`: remove the records of keys not in `keep` that nobody wrote or
    /// pulled within `grace`, then the blobs no remaining record names, written longer ago
    /// than `grace` (and at least [`BLOB_GRACE_MIN`]). Records go first: a record never names
    /// a removed blob. A record that cannot be read or checked names nothing and is removed
    /// once old (it could not be served anyway).
    pub fn gc(&self, keep: &HashSet<Key>, grace: Duration, dry_run: bool) -> Result<GcReport> {
        let fail = |e: RemoteError| anyhow::anyhow!("remote {}: {e}", self.url());
        let now = SystemTime::now();
        let old = |t: SystemTime, g: Duration| now.duration_since(t).unwrap_or_default() > g;
        // When each key was last pulled: the pulls' lists (an old list goes with this gc).
        let mut used: std::collections::HashMap<Key, SystemTime> = Default::default();
        let mut r = GcReport::default();
        for (p, m) in self.remote.list("used/").map_err(fail)? {
            let mut buf = Vec::new();
            if let Ok(Some(_)) = self.remote.get(&p, MAX_USED, &mut buf) {
                for k in serde_json::from_slice::<Vec<Key>>(&buf).unwrap_or_default() {
                    let t = used.entry(k).or_insert(m.modified);
                    *t = (*t).max(m.modified);
                }
            }
            if old(m.modified, grace) && !dry_run {
                self.remote.delete(&p).map_err(fail)?;
            }
        }
        let records = self.all_records().map_err(fail)?;
        let mut remaining = Vec::new();
        for (k, written) in records {
            let last = used.get(&k).map_or(written, |&u| u.max(written));
            if keep.contains(&k) || !old(last, grace) {
                remaining.push(k);
                r.kept_records += 1;
                continue;
            }
            if !dry_run {
                self.remote.delete(&record_path(&k)).map_err(fail)?;
            }
            r.removed_records.push(k);
        }
        // The blobs the remaining records name (a record that cannot be read keeps nothing).
        let referenced: HashSet<String> = parallel(
            &remaining,
            PARALLEL,
            |k| {
                let mut buf = Vec::new();
                match self.remote.get(&record_path(k), MAX_RECORD, &mut buf) {
                    Ok(Some(_)) => Ok(check_record(&buf, k)
                        .map(|got| {
                            (got.entry.files.into_iter())
                                .filter(|f| !got.inline.contains_key(&f.name))
                                .filter_map(|f| f.blake3)
                                .collect()
                        })
                        .unwrap_or_default()),
                    Ok(None) | Err(RemoteError::TooBig(..)) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            },
            |_| {},
        )
        .into_iter()
        .collect::<RResult<Vec<Vec<String>>>>()
        .map_err(fail)?
        .into_iter()
        .flatten()
        .collect();
        let blob_grace = grace.max(BLOB_GRACE_MIN);
        for (p, m) in self.remote.list("blobs/").map_err(fail)? {
            let Some(d) = p.rsplit('/').next().filter(|d| is_digest(d)) else {
                r.strange.push(p);
                continue;
            };
            if p != blob_path(d) {
                r.strange.push(p);
                continue;
            }
            if referenced.contains(d) || !old(m.modified, blob_grace) {
                r.kept_blobs += 1;
                continue;
            }
            if !dry_run {
                self.remote.delete(&p).map_err(fail)?;
            }
            r.removed_blobs += 1;
            r.removed_bytes += m.size;
        }
        Ok(r)
    }
}

/// Before a run: pull the entries its plan can take from the remote. The plan is made as if
/// every key the remote has were cached here, so that a stage whose result is on the remote
/// needs nothing upstream of it pulled; the keys it would then serve from the cache and the
/// local store lacks are pulled. Returns how many were.
pub fn pull_for_plan(
    link: &Link,
    p: &crate::pipeline::Pipeline,
    records: &[crate::key::KeyRecord],
    targets: &[usize],
    force: &[usize],
    out: &crate::progress::Output,
) -> Result<usize> {
    let keys: Vec<Key> = records.iter().map(|r| r.key()).collect();
    link.pull_for(
        &keys,
        |on_remote| {
            let (plan, served) =
                plan_with_remote(&link.store, on_remote, p, records, targets, force);
            served.iter().map(|&i| plan.steps[i].key.clone()).collect()
        },
        &p.name,
        out,
    )
}

/// The plan a run makes when every key in `on_remote` counts as cached, and the steps of it
/// that the remote would serve (hits this store lacks).
pub fn plan_with_remote(
    store: &Store,
    on_remote: &HashSet<Key>,
    p: &crate::pipeline::Pipeline,
    records: &[crate::key::KeyRecord],
    targets: &[usize],
    force: &[usize],
) -> (crate::plan::Plan, Vec<usize>) {
    use crate::plan::{make_plan, Action, Cached};
    let plan = make_plan(
        p,
        records,
        &|k| match store.cached(k) {
            Cached::Yes => Cached::Yes,
            _ if on_remote.contains(k) => Cached::Yes,
            other => other,
        },
        targets,
        force,
    );
    let served = (0..plan.steps.len())
        .filter(|&i| plan.steps[i].action == Action::Hit && on_remote.contains(&plan.steps[i].key))
        .collect();
    (plan, served)
}

/// What `gc --remote` did (or would do).
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed_records: Vec<Key>,
    pub kept_records: usize,
    pub removed_blobs: usize,
    pub removed_bytes: u64,
    pub kept_blobs: usize,
    /// Objects under `blobs/` that are not named as blobs (never removed).
    pub strange: Vec<String>,
}

struct HashSink(blake3::Hasher);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum PullError {
    Remote(RemoteError),
    Local(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::record;

    /// A local entry committed for `p`, with one file.
    fn committed(s: &Store, p: u32, content: &[u8]) -> Key {
        let r = record(p);
        let k = r.key();
        let st = s.staging(&k).unwrap();
        std::fs::write(st.join("a.txt"), content).unwrap();
        s.commit(&st, &r, "x", 0.1, false).unwrap();
        k
    }

    fn link(remote: &Path, store: &Arc<Store>) -> Arc<Link> {
        let r = open(remote.to_str().unwrap(), Path::new("/")).unwrap();
        Arc::new(Link::new(r, store.clone(), false, true))
    }

    /// A file too big to travel inline: a blob.
    fn big(c: u8) -> Vec<u8> {
        vec![c; INLINE_MAX as usize + 1]
    }

    fn pull(l: &Link, k: &Key) -> usize {
        let out = crate::progress::Output::detect(true);
        l.pull_for(std::slice::from_ref(k), |on| on.clone(), "p", &out)
            .unwrap()
    }

    fn content(s: &Store, k: &Key) -> Vec<u8> {
        match s.lookup(k) {
            Lookup::Hit(d) => std::fs::read(d.join("a.txt")).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_from_a_remote_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let k = committed(&s, 1, b"hello");
        let entry: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.object_dir(&k).join(ENTRY)).unwrap()).unwrap();
        let wrap =
            |e: &serde_json::Value| serde_json::to_vec(&serde_json::json!({ "entry": e })).unwrap();
        assert!(check_record(&wrap(&entry), &k).is_ok());
        let other = record(2).key();
        assert!(check_record(&wrap(&entry), &other)
            .unwrap_err()
            .contains("names key"));
        let mut v = entry.clone();
        v["record"]["params"]["p"] = 9.into();
        let e = check_record(&wrap(&v), &k).unwrap_err();
        assert!(e.contains("do not hash to its key"), "{e}");
        for bad in ["../x", "entry.json", "a/b", ""] {
            let mut v = entry.clone();
            v["files"][0]["name"] = bad.into();
            let e = check_record(&wrap(&v), &k).unwrap_err();
            assert!(e.contains("not a plain file name"), "{bad}: {e}");
        }
        let mut v = entry.clone();
        v["files"][0]["blake3"] = "../../etc/passwd".into();
        assert!(check_record(&wrap(&v), &k)
            .unwrap_err()
            .contains("no digest"));
        // Inline content for a file the record does not list.
        let r = serde_json::json!({ "entry": entry, "inline": { "../x": "aGk=" } });
        let e = check_record(&serde_json::to_vec(&r).unwrap(), &k).unwrap_err();
        assert!(e.contains("does not list"), "{e}");
    }

    #[test]
    fn push_then_pull_through_a_folder_and_a_bad_blob_is_repaired() {
        let t = tempfile::tempdir().unwrap();
        let remote = t.path().join("remote");
        let a = Arc::new(Store::new(&t.path().join("a")));
        let k = committed(&a, 1, &big(b'h'));
        let la = link(&remote, &a);
        let n = INLINE_MAX + 1;
        assert_eq!(
            la.push_keys(std::slice::from_ref(&k)).unwrap(),
            vec![Some(Pushed::Yes(1, n))]
        );
        // A second push finds the record there (the first wins).
        assert_eq!(
            la.push_keys(std::slice::from_ref(&k)).unwrap(),
            vec![Some(Pushed::There)]
        );

        let b = Arc::new(Store::new(&t.path().join("b")));
        let lb = link(&remote, &b);
        assert_eq!(pull(&lb, &k), 1);
        assert!(lb.was_pulled(&k));
        assert_eq!(content(&b, &k), big(b'h'));

        // The blob flipped on the remote: a third store's pull is refused and repairs it.
        let d = blake3::hash(&big(b'h')).to_hex().to_string();
        std::fs::write(remote.join(blob_path(&d)), big(b'X')).unwrap();
        let c = Arc::new(Store::new(&t.path().join("c")));
        let lc = link(&remote, &c);
        assert_eq!(pull(&lc, &k), 0);
        assert!(
            matches!(c.lookup(&k), Lookup::Miss),
            "a bad blob is never committed"
        );
        // Recomputed (the same bytes) and pushed: the blob is sent again.
        assert_eq!(committed(&c, 1, &big(b'h')), k);
        assert_eq!(
            lc.push_keys(std::slice::from_ref(&k)).unwrap(),
            vec![Some(Pushed::There)]
        );
        assert_eq!(
            std::fs::read(remote.join(blob_path(&d))).unwrap(),
            big(b'h')
        );

        // A recomputation that differs (a stage that is not bit-reproducible) replaces a
        // record whose blob is bad, once that is checked again.
        std::fs::write(remote.join(blob_path(&d)), big(b'X')).unwrap();
        let e = Arc::new(Store::new(&t.path().join("e")));
        let le = link(&remote, &e);
        assert_eq!(pull(&le, &k), 0);
        committed(&e, 1, &big(b'o'));
        assert_eq!(
            le.push_keys(std::slice::from_ref(&k)).unwrap(),
            vec![Some(Pushed::Repaired(1, n))]
        );
        let f = Arc::new(Store::new(&t.path().join("f")));
        assert_eq!(pull(&link(&remote, &f), &k), 1);
        assert_eq!(content(&f, &k), big(b'o'));
    }

    #[test]
    fn small_files_travel_in_the_record_and_damage_there_is_repaired() {
        let t = tempfile::tempdir().unwrap();
        let remote = t.path().join("remote");
        let a = Arc::new(Store::new(&t.path().join("a")));
        let k = committed(&a, 4, b"hello");
        assert_eq!(
            link(&remote, &a)
                .push_keys(std::slice::from_ref(&k))
                .unwrap(),
            vec![Some(Pushed::Yes(0, 0))],
            "no blob sent"
        );
        assert!(!remote.join("blobs").exists());
        // The content in the record flipped: refused, recomputed, the record replaced.
        let rec = remote.join(record_path(&k));
        let text = std::fs::read_to_string(&rec).unwrap();
        use base64::Engine;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(text.contains(&b64(b"hello")));
        std::fs::write(&rec, text.replace(&b64(b"hello"), &b64(b"hellO"))).unwrap();
        let c = Arc::new(Store::new(&t.path().join("c")));
        let lc = link(&remote, &c);
        assert_eq!(pull(&lc, &k), 0);
        assert!(matches!(c.lookup(&k), Lookup::Miss));
        committed(&c, 4, b"hello");
        assert_eq!(
            lc.push_keys(std::slice::from_ref(&k)).unwrap(),
            vec![Some(Pushed::Repaired(0, 0))]
        );
        let d = Arc::new(Store::new(&t.path().join("d")));
        assert_eq!(pull(&link(&remote, &d), &k), 1);
        assert_eq!(content(&d, &k), b"hello");
    }

    #[test]
    fn an_unreachable_remote_is_a_warning_unless_required() {
        let t = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::new(t.path()));
        let k = committed(&s, 3, b"x");
        // A file where the remote folder should be: every operation fails.
        let bad = t.path().join("not-a-folder");
        std::fs::write(&bad, "").unwrap();
        let r = dir::DirRemote::open("x", &bad.join("sub")).unwrap();
        let l = Link::new(Box::new(r), s.clone(), false, true);
        assert_eq!(l.push_keys(std::slice::from_ref(&k)).unwrap(), vec![None]);
        assert!(l.is_down());
        let r = dir::DirRemote::open("x", &bad.join("sub")).unwrap();
        let l = Link::new(Box::new(r), s, true, true);
        let e = l.push_keys(&[k]).unwrap_err().to_string();
        assert!(e.contains("--remote-required"), "{e}");
    }

    #[test]
    fn gc_removes_old_unreachable_records_then_their_blobs_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let remote = t.path().join("remote");
        let s = Arc::new(Store::new(&t.path().join("a")));
        let (k1, k2) = (committed(&s, 1, &big(b'1')), committed(&s, 2, &big(b'2')));
        let l = link(&remote, &s);
        l.push_keys(&[k1.clone(), k2.clone()]).unwrap();
        let keep: HashSet<Key> = [k1.clone()].into();
        // Everything is fresh: nothing goes.
        let r = l.gc(&keep, Duration::from_secs(3600), false).unwrap();
        assert!(r.removed_records.is_empty() && r.removed_blobs == 0);
        // Records and blobs two days old: k2's record goes, then its blob; k1's stay.
        let ago = SystemTime::now() - Duration::from_secs(2 * 86400);
        let digest = |c: u8| blake3::hash(&big(c)).to_hex().to_string();
        for p in [
            record_path(&k2),
            record_path(&k1),
            blob_path(&digest(b'1')),
            blob_path(&digest(b'2')),
        ] {
            std::fs::File::options()
                .write(true)
                .open(remote.join(p))
                .unwrap()
                .set_modified(ago)
                .unwrap();
        }
        let r = l.gc(&keep, Duration::from_secs(3600), true).unwrap();
        assert_eq!(
            (r.removed_records.clone(), r.removed_blobs),
            (vec![k2.clone()], 1)
        );
        assert!(
            remote.join(record_path(&k2)).exists(),
            "a dry run removes nothing"
        );
        let r = l.gc(&keep, Duration::from_secs(3600), false).unwrap();
        assert_eq!(
            (r.removed_records, r.removed_blobs, r.kept_blobs),
            (vec![k2.clone()], 1, 1)
        );
        assert!(!remote.join(record_path(&k2)).exists());
        assert!(remote.join(record_path(&k1)).exists());
        assert!(
            remote.join(blob_path(&digest(b'1'))).exists(),
            "a kept record's blob stays"
        );
    }
}
