//! A stage job as plain data, and the one runtime that runs it, whichever launcher started it.
//!
//! A [`JobSpec`] holds everything one stage run needs: kind, every param (those outside the key
//! too), seed, device, threads, the key and its record, the inputs' keys and store folders, and
//! the store. It serialises to JSON, so that `seqpipe exec-job FILE` can run it in another
//! process, or on another machine that sees the same store. [`run_job`] claims the key, checks
//! the store again under the claim, computes, commits and releases.

use crate::cache::{Lookup, Store};
use crate::claim::{self, ClaimInfo, TryClaim};
use crate::context::{InputInfo, StageCtx};
use crate::key::{Key, KeyRecord};
use crate::progress::StageProgress;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What can go wrong running a job, besides the stage's own error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{path} is not a seqpipe job description: {why}")]
    Description { path: String, why: String },
    #[error(
        "{path} is a job description of schema {found}, this seqpipe reads schema {JOB_SCHEMA}"
    )]
    Schema { path: String, found: u32 },
    #[error("unknown stage kind `{0}` in the job description")]
    UnknownKind(String),
    #[error("the job's params do not fit kind `{kind}`: {why}")]
    Params { kind: String, why: String },
    #[error("the job description of `{stage}` is inconsistent: its params or record do not give key {key}")]
    Inconsistent { stage: String, key: String },
    #[error("input `{role}` ({stage}) is damaged: {why}")]
    InputDamaged {
        role: String,
        stage: String,
        why: String,
    },
    #[error("input `{role}` ({stage}) is not in the store at {path}")]
    InputMissing {
        role: String,
        stage: String,
        path: String,
    },
    #[error(
        "input `{role}` ({stage}) changed while this stage ran: its file {file} is not the one \
         verified before (a view under outputs/ shares the store's files; copy a file out of a \
         view before editing it). Nothing was committed for this stage; rerun"
    )]
    InputChanged {
        role: String,
        stage: String,
        file: String,
    },
    #[error("the stage panicked: {0}")]
    Panicked(String),
}

/// The most a job description may hold (params, records and inputs: kilobytes in practice).
const MAX_JOB: u64 = 16 << 20;

/// Bump when the job description changes meaning.
pub const JOB_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub schema: u32,
    pub pipeline: String,
    pub stage: String,
    pub kind: String,
    /// Every param, those outside the key (such as `checkpoint_every`) included.
    pub params: serde_json::Map<String, serde_json::Value>,
    pub seed: u64,
    pub device: crate::device::Device,
    pub threads: usize,
    pub key: Key,
    pub record: KeyRecord,
    pub inputs: Vec<JobInput>,
    /// The store folder (`outputs/.seqpipe` by default).
    pub store: PathBuf,
    /// The project folder: relative paths in params resolve against it.
    pub root: PathBuf,
    /// Recompute even if the store has the key, and replace the entry.
    pub force: bool,
    /// What a cluster job asks for (not part of the key; unused by local launchers).
    #[serde(default)]
    pub resources: crate::resources::Resources,
    /// Whether the stage computes on a device (models, training); the others take ms.
    #[serde(default)]
    pub heavy: bool,
    /// Where the stage shows its progress while it runs, for the run's results page
    /// (`outputs/<pipeline>/.live/<stage>.csv`, see [`crate::live`]); not part of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    pub role: String,
    pub stage: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub key: Key,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// This job computed and committed the entry.
    Computed,
    /// Another process committed the key first (it held the claim); this job used its entry.
    Reused,
}

/// What a finished job reports back (for `exec-job`, as a JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub outcome: Outcome,
    pub seconds: f64,
    /// Notes on this run (resumed from a checkpoint, waited for another run, …).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl JobSpec {
    pub fn read(path: &Path) -> Result<JobSpec> {
        let bytes = crate::fsutil::read_bounded(path, MAX_JOB)
            .with_context(|| format!("reading the job description {}", path.display()))?;
        let spec: JobSpec = serde_json::from_slice(&bytes).map_err(|e| JobError::Description {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        if spec.schema != JOB_SCHEMA {
            return Err(JobError::Schema {
                path: path.display().to_string(),
                found: spec.schema,
            }
            .into());
        }
        Ok(spec)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(crate::cache::write_synced(
            path,
            &serde_json::to_vec_pretty(self)?,
        )?)
    }
}

/// The inputs' entries are still the files verified before the stage read them: an input
/// edited meanwhile (through a view, which shares the store's files, by root or after a
/// `chmod`) fails the stage, so that nothing computed from changed bytes is committed.
fn inputs_unchanged(spec: &JobSpec, store: &Store) -> Result<()> {
    for i in &spec.inputs {
        if let Some(Err(file)) = store.unchanged_since_verified(&i.key) {
            return Err(JobError::InputChanged {
                role: i.role.clone(),
                stage: i.stage.clone(),
                file,
            }
            .into());
        }
    }
    Ok(())
}

/// Run one job: claim its key (waiting while another process holds it), use the entry if the
/// store has it by then, else compute, commit and release.
pub fn run_job(spec: &JobSpec, store: &Store, progress: StageProgress) -> Result<JobResult> {
    let t = Instant::now();
    let kind = crate::stages::find_kind(&spec.kind)
        .ok_or_else(|| JobError::UnknownKind(spec.kind.clone()))?;
    let params = (kind.parse)(&spec.params).map_err(|issues| JobError::Params {
        kind: spec.kind.clone(),
        why: issues
            .iter()
            .map(|i| i.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    if params.canonical_params() != spec.record.params || spec.record.key() != spec.key {
        return Err(JobError::Inconsistent {
            stage: spec.stage.clone(),
            key: spec.key.short().to_string(),
        }
        .into());
    }
    let mut notes = Vec::new();
    let info = ClaimInfo::new(&spec.key, &spec.pipeline, &spec.stage);
    let mut waiting = claim::Waiting::new(claim::WAIT_REMINDER, claim::wait_limit());
    let wait_began = Instant::now();
    let claim = loop {
        let tried = store.claims().try_claim(&info).with_context(|| {
            format!(
                "claiming key {} in {}",
                spec.key.short(),
                store.meta().display()
            )
        })?;
        for w in claim::take_warnings() {
            progress.println(&format!("  [{}] {w}", spec.stage));
            notes.push(w);
        }
        match tried {
            TryClaim::Got(c) => break c,
            TryClaim::Held(other) => {
                let who = other
                    .map(|o| o.describe())
                    .unwrap_or_else(|| "another process".into());
                match waiting.step(wait_began.elapsed()) {
                    claim::WaitStep::Begin => {
                        let note = format!("waiting: {who} is computing the same key");
                        progress.println(&format!("  [{}] {note}", spec.stage));
                        notes.push(note);
                    }
                    claim::WaitStep::Remind(after) => progress.println(&format!(
                        "  [{}] still waiting after {} s for {who}",
                        spec.stage,
                        after.as_secs()
                    )),
                    claim::WaitStep::Quiet => {}
                    claim::WaitStep::GiveUp => {
                        return Err(claim::WaitTooLong {
                            key: spec.key.short().to_string(),
                            path: store.claims().path(&spec.key).display().to_string(),
                            who,
                            waited_s: wait_began.elapsed().as_secs(),
                            limit_s: claim::wait_limit().as_secs(),
                        }
                        .into())
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    if !spec.force {
        match store.lookup(&spec.key) {
            Lookup::Hit(_) => {
                return Ok(JobResult {
                    outcome: Outcome::Reused,
                    seconds: t.elapsed().as_secs_f64(),
                    notes,
                })
            }
            Lookup::Corrupt(why) => {
                let note = format!("warning: {why}; the entry is quarantined and recomputed");
                progress.println(&format!("  [{}] {note}", spec.stage));
                notes.push(note);
                store.quarantine(&spec.key)?;
            }
            Lookup::Miss => {}
        }
    }
    let mut inputs = Vec::new();
    for i in &spec.inputs {
        if let Lookup::Corrupt(why) = store.lookup(&i.key) {
            return Err(JobError::InputDamaged {
                role: i.role.clone(),
                stage: i.stage.clone(),
                why,
            }
            .into());
        }
        if !i.dir.exists() {
            return Err(JobError::InputMissing {
                role: i.role.clone(),
                stage: i.stage.clone(),
                path: i.dir.display().to_string(),
            }
            .into());
        }
        inputs.push((
            i.role.clone(),
            InputInfo {
                stage: i.stage.clone(),
                kind: i.kind.clone(),
                params: i.params.clone(),
                dir: i.dir.clone(),
            },
        ));
    }
    let staging = store.staging(&spec.key)?;
    let checkpoints = store.checked_checkpoint_dir(&spec.key)?;
    if spec.force && checkpoints.exists() {
        // Forced means from scratch: not from where an earlier, interrupted run stopped.
        store.remove_checkpoints(&spec.key).map_err(|e| {
            anyhow::anyhow!(
                "removing the checkpoint {} of a forced stage: {e}",
                checkpoints.display()
            )
        })?;
        let note = "forced: an earlier run's checkpoint was discarded".to_string();
        progress.println(&format!("  [{}] {note}", spec.stage));
        notes.push(note);
    }
    let mut ctx = StageCtx::new(
        &spec.stage,
        spec.seed,
        &spec.root,
        spec.device,
        inputs,
        staging.clone(),
        checkpoints.join("ckpt"),
        progress.clone(),
    )
    .with_files(spec.record.files.clone())
    .with_live(spec.live.clone());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| params.run(&mut ctx)));
    progress.finish();
    let computed = match result {
        Ok(r) => r.and_then(|()| ctx.finish()),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(JobError::Panicked(msg).into())
        }
    };
    notes.extend(ctx.notes().iter().cloned());
    let secs = t.elapsed().as_secs_f64();
    let committed = computed
        .and_then(|()| inputs_unchanged(spec, store))
        .and_then(|()| Ok(store.commit(&staging, &spec.record, &spec.stage, secs, spec.force)?));
    if let Err(e) = committed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let _ = store.remove_checkpoints(&spec.key);
    drop(claim);
    Ok(JobResult {
        outcome: Outcome::Computed,
        seconds: secs,
        notes,
    })
}
