//! What a running stage sees: its params' seed, its inputs' artifact folders, the folder it
//! writes into, a progress handle and a log. Artifacts are plain files (JSON, CSV, text,
//! safetensors) so users can read them and later stages can load them.

use crate::progress::StageProgress;
use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An input as a stage sees it: the upstream stage's name, kind, typed params and files.
#[derive(Debug, Clone)]
pub struct InputInfo {
    pub stage: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub dir: PathBuf,
}

pub struct StageCtx {
    pub stage: String,
    pub seed: u64,
    /// The project root: relative paths in params resolve against it.
    pub root: PathBuf,
    pub device: crate::device::Device,
    /// (role, (upstream kind, artifact folder)), in the order the pipeline file lists them.
    inputs: Vec<(String, InputInfo)>,
    out: PathBuf,
    pub progress: StageProgress,
    /// Where a long stage keeps its checkpoints; it belongs to the stage's key.
    pub checkpoints: PathBuf,
    /// Project-relative path → blake3 of the content the key was computed from: a project file
    /// a stage reads must still have it ([`StageCtx::read_project_file`]).
    files: std::collections::BTreeMap<String, String>,
    summary: serde_json::Map<String, serde_json::Value>,
    log: Vec<String>,
    notes: Vec<String>,
    /// Where this stage shows its progress while it runs (outside its entry), if anywhere.
    live_path: Option<PathBuf>,
    live: Option<crate::live::LiveRows>,
    /// Rows given to [`StageCtx::live_row`], shown or not.
    live_offered: usize,
}

impl StageCtx {
    pub fn new(
        stage: &str,
        seed: u64,
        root: &Path,
        device: crate::device::Device,
        inputs: Vec<(String, InputInfo)>,
        out: PathBuf,
        checkpoints: PathBuf,
        progress: StageProgress,
    ) -> Self {
        StageCtx {
            stage: stage.to_string(),
            seed,
            root: root.to_path_buf(),
            device,
            inputs,
            out,
            progress,
            checkpoints,
            files: Default::default(),
            summary: Default::default(),
            log: Vec::new(),
            notes: Vec::new(),
            live_path: None,
            live: None,
            live_offered: 0,
        }
    }

    /// Show this stage's progress in `path` while it runs ([`crate::live`]): the run's
    /// results page draws it. Not part of the key; the entry is the same without it.
    pub fn with_live(mut self, path: Option<PathBuf>) -> Self {
        self.live_path = path;
        self
    }

    /// Rows of progress given to [`StageCtx::live_row`] so far (shown, or not where the stage
    /// has no live file or it is full).
    pub fn live_rows(&self) -> usize {
        self.live_offered
    }

    /// Show one row of progress (a CSV line under `header`, which the first row writes) in
    /// the stage's live file, when it has one. Best effort: it never fails the stage.
    pub fn live_row(&mut self, header: &str, row: &str) {
        self.live_offered += 1;
        let Some(path) = &self.live_path else {
            return;
        };
        self.live
            .get_or_insert_with(|| crate::live::LiveRows::create(path, header))
            .append(row);
    }

    /// The project files this stage may read, with the digests its key holds.
    pub fn with_files(mut self, files: std::collections::BTreeMap<String, String>) -> Self {
        self.files = files;
        self
    }

    /// Read a project file (a corpus, a series) that the stage's key was computed from, and
    /// check that the bytes read are the ones the key names: a file edited between planning and
    /// this read (an editor's save, a `git checkout` during a sweep) fails the stage, which then
    /// commits nothing. The bytes are read into memory and hashed there, so what is checked is
    /// exactly what the stage uses, even if the file changes again later.
    pub fn read_project_file(&self, rel: &str) -> Result<Vec<u8>> {
        let Some(want) = self.files.get(rel) else {
            anyhow::bail!(
                "stage `{}` read `{rel}`, which its key does not name (a seqpipe bug: a stage \
                 must declare the files it reads)",
                self.stage
            );
        };
        let path = self.root.join(rel);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read `{rel}`"))?;
        let got = if bytes.len() >= 16 << 20 {
            blake3::Hasher::new().update_rayon(&bytes).finalize()
        } else {
            blake3::hash(&bytes)
        };
        if got.to_hex().as_str() != want {
            anyhow::bail!(
                "`{rel}` changed while the run was going on: the run planned this stage with \
                 its content as it was then (blake3 {}…), and it now reads other bytes ({} \
                 bytes, blake3 {}…). Nothing was committed for this stage; rerun to use the file \
                 as it is now",
                &want[..12.min(want.len())],
                bytes.len(),
                &got.to_hex()[..12]
            );
        }
        Ok(bytes)
    }

    /// The artifact folder of the input in `role`.
    pub fn input(&self, role: &str) -> Result<&Path> {
        self.inputs
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, i)| i.dir.as_path())
            .ok_or_else(|| anyhow!("stage `{}` has no input `{role}`", self.stage))
    }

    /// All inputs: role → folder, in role order.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.inputs
            .iter()
            .map(|(r, i)| (r.as_str(), i.dir.as_path()))
    }

    /// All inputs with what produced them.
    pub fn input_infos(&self) -> impl Iterator<Item = (&str, &InputInfo)> {
        self.inputs.iter().map(|(r, i)| (r.as_str(), i))
    }

    pub fn read_json<T: DeserializeOwned>(&self, role: &str, file: &str) -> Result<T> {
        read_json(&self.input(role)?.join(file))
    }

    /// Copy a file of an input's artifact into this stage's output.
    pub fn copy_from_input(&self, role: &str, file: &str) -> Result<()> {
        let src = self.input(role)?.join(file);
        std::fs::copy(&src, self.out.join(file))
            .with_context(|| format!("copying {}", src.display()))?;
        Ok(())
    }

    pub fn out_path(&self, file: &str) -> PathBuf {
        self.out.join(file)
    }

    pub fn write_json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        self.write_bytes(file, &bytes)
    }

    /// Compact JSON, for large data (token lists, index sequences).
    pub fn write_json_compact<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        self.write_bytes(file, &serde_json::to_vec(value)?)
    }

    pub fn write_text(&self, file: &str, text: &str) -> Result<()> {
        self.write_bytes(file, text.as_bytes())
    }

    pub fn write_bytes(&self, file: &str, bytes: &[u8]) -> Result<()> {
        let path = self.out.join(file);
        Ok(crate::fsutil::write_parts(&path, &[bytes])?)
    }

    /// Write rows as CSV with a header.
    pub fn write_csv<R: Serialize>(
        &self,
        file: &str,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<()> {
        let path = self.out.join(file);
        let mut w =
            csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
        for r in rows {
            w.serialize(r)?;
        }
        w.flush()?;
        Ok(())
    }

    /// A headline number or string of this stage's result; reports and tables collect these.
    pub fn summary(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.summary.insert(key.to_string(), value.into());
    }

    /// A line for the stage's log (`log.txt` in its artifact folder).
    pub fn log(&mut self, line: impl Into<String>) {
        let line = line.into();
        self.progress.println(&format!("  [{}] {line}", self.stage));
        self.log.push(line);
    }

    /// Lines already shown by an earlier, interrupted run of this stage (a resumed training's
    /// samples): kept for `log.txt` without being shown again.
    pub fn restore_log(&mut self, lines: impl IntoIterator<Item = String>) {
        self.log.extend(lines);
    }

    /// A note about this run of the stage, not about its result (resuming from a checkpoint,
    /// a checkpoint that failed its check): shown, and kept in the run record, never in the
    /// stage's files, so that a resumed run commits exactly what an uninterrupted one does.
    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        self.progress.println(&format!("  [{}] {line}", self.stage));
        self.notes.push(line);
    }

    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Write `summary.json` and `log.txt`. Called by the executor after `run` succeeds.
    pub fn finish(&self) -> Result<()> {
        self.write_json("summary.json", &self.summary)?;
        if !self.log.is_empty() {
            let mut f = std::fs::File::create(self.out.join("log.txt"))?;
            for l in &self.log {
                writeln!(f, "{l}")?;
            }
        }
        Ok(())
    }
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The summary of an artifact folder.
pub fn read_summary(dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    read_json(&dir.join("summary.json"))
}
