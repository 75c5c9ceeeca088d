//! A run's progress while it goes on: each training appends its epoch rows, as they finish, to
//! `outputs/<pipeline>/.live/<stage>.csv` (the columns of its `metrics.csv`), and the process
//! that runs the plan (the driver) reads them to draw `report.html` with the curves so far.
//!
//! The file is outside the store and outside the stage's entry: keys and cached bytes are the
//! same with or without it. It is written by seqpipe's job only (one small row per epoch, no
//! fsync) and bounded ([`MAX_LIVE`]); the driver treats it as untrusted all the same: it reads
//! at most [`MAX_LIVE`] bytes, never through a link (at the file or at `.live`), and keeps only
//! complete lines (a row being written is left for the next read). The driver clears a stage's
//! file when it starts the stage and removes it when the stage ends, so what a finished or
//! killed run left is never shown as the next run's progress.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The most a live file holds: about 40,000 epochs of rows. Past it the file stops growing
/// (the page shows the curves up to there until the stage ends and its `metrics.csv` is
/// published).
pub const MAX_LIVE: u64 = 4 << 20;

/// The folder of a pipeline's live files.
pub fn dir(outputs: &Path, pipeline: &str) -> PathBuf {
    outputs.join(pipeline).join(".live")
}

/// The live file of `stage`.
pub fn file(outputs: &Path, pipeline: &str, stage: &str) -> PathBuf {
    dir(outputs, pipeline).join(format!("{stage}.csv"))
}

/// Whether `dir` is a real folder (not a link to one).
fn is_real_dir(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
}

/// Make the live folder of a pipeline (driver side). `false`: something other than a folder
/// stands there (a link, a file), which seqpipe leaves alone; the run then has no live page
/// data, only its final page.
pub fn prepare(outputs: &Path, pipeline: &str) -> bool {
    let d = dir(outputs, pipeline);
    if fs::symlink_metadata(&d).is_err() {
        let _ = fs::create_dir(&d);
    }
    is_real_dir(&d)
}

/// Remove a stage's live file (driver side: when the stage starts and when it ends). A link
/// standing there is removed itself, never followed.
pub fn clear(path: &Path) {
    if path.parent().is_some_and(is_real_dir) {
        let _ = fs::remove_file(path);
    }
}

/// Remove the live folder of a pipeline when nothing is left in it (driver side, at the end
/// of a run).
pub fn remove_dir_if_empty(outputs: &Path, pipeline: &str) {
    let d = dir(outputs, pipeline);
    if is_real_dir(&d) {
        let _ = fs::remove_dir(&d);
    }
}

/// The complete lines of a live file, at most [`MAX_LIVE`] bytes of them: `None` when there
/// is no such plain file (missing, a link, a folder, larger than a live file may be). A last
/// line without its newline is still being written and is left out.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    if !path.parent().is_some_and(is_real_dir) {
        return None;
    }
    let mut bytes = crate::fsutil::read_bounded(path, MAX_LIVE).ok()?;
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(end);
    Some(bytes)
}

/// The job's side: appends rows to its live file, best effort (a live file that cannot be
/// written never fails the stage; the page then shows the stage's results when it ends).
#[derive(Default)]
pub struct LiveRows {
    file: Option<File>,
    /// Rows written so far.
    rows: usize,
    bytes: u64,
}

impl LiveRows {
    /// A live file at `path` holding `header` (a CSV header, without its newline). What stood
    /// at `path` goes (a link is removed itself) and the file is created anew, exclusively;
    /// nothing is written when `.live` is not a real folder.
    pub fn create(path: &Path, header: &str) -> Self {
        let mut live = LiveRows::default();
        if !path.parent().is_some_and(is_real_dir) {
            return live;
        }
        let _ = fs::remove_file(path);
        let Ok(f) = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        else {
            return live;
        };
        live.file = Some(f);
        live.write(header);
        live
    }

    /// Rows written so far (the header not counted).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Append one row (a CSV line, without its newline): one write, so that a reader sees whole
    /// lines or a last partial one it leaves out. Past [`MAX_LIVE`] the file stops growing.
    pub fn append(&mut self, row: &str) {
        if self.file.is_some() && self.write(row) {
            self.rows += 1;
        }
    }

    fn write(&mut self, line: &str) -> bool {
        let Some(f) = self.file.as_mut() else {
            return false;
        };
        let n = line.len() as u64 + 1;
        if self.bytes + n > MAX_LIVE {
            self.file = None;
            return false;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if f.write_all(&buf).is_err() {
            self.file = None;
            return false;
        }
        self.bytes += n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_dir() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("p")).unwrap();
        assert!(prepare(t.path(), "p"));
        let f = file(t.path(), "p", "train[lr=1]");
        (t, f)
    }

    #[test]
    fn rows_are_read_back_and_a_half_written_last_line_is_left_out() {
        let (_t, f) = live_dir();
        let mut w = LiveRows::create(&f, "epoch,loss");
        w.append("1,2.5");
        w.append("2,2.25");
        assert_eq!(w.rows(), 2);
        assert_eq!(read(&f).unwrap(), b"epoch,loss\n1,2.5\n2,2.25\n");
        // A row caught half written: `3,2.1` of `3,2.125` would be a wrong number.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(b"3,2.1")
            .unwrap();
        assert_eq!(read(&f).unwrap(), b"epoch,loss\n1,2.5\n2,2.25\n");
        // Not even the header complete: nothing.
        std::fs::write(&f, b"epoch,lo").unwrap();
        assert_eq!(read(&f).unwrap(), b"");
    }

    #[test]
    fn an_oversized_file_is_refused_and_the_writer_stops_at_the_bound() {
        let (_t, f) = live_dir();
        std::fs::write(&f, vec![b'1'; MAX_LIVE as usize + 10]).unwrap();
        assert_eq!(read(&f), None, "a file larger than a live file may be");
        let row = "x".repeat(1 << 16);
        let mut w = LiveRows::create(&f, "h");
        for _ in 0..100 {
            w.append(&row);
        }
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len <= MAX_LIVE, "{len} bytes");
        assert!(w.rows() > 10 && w.rows() < 100, "{} rows", w.rows());
        assert!(read(&f).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn links_are_never_followed() {
        let (t, f) = live_dir();
        let secret = t.path().join("secret.csv");
        std::fs::write(&secret, b"epoch,loss\n1,2\n").unwrap();
        // A link at the live file: not read, and the writer replaces the link, not its target.
        std::os::unix::fs::symlink(&secret, &f).unwrap();
        assert_eq!(read(&f), None);
        let mut w = LiveRows::create(&f, "epoch,loss");
        w.append("1,9");
        assert_eq!(std::fs::read(&secret).unwrap(), b"epoch,loss\n1,2\n");
        assert!(!std::fs::symlink_metadata(&f).unwrap().is_symlink());
        // A link at `.live`: neither read nor written through, and not made a folder.
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(other.path().join("q")).unwrap();
        std::fs::write(other.path().join("q/s.csv"), b"epoch,loss\n1,2\n").unwrap();
        std::fs::create_dir(t.path().join("q")).unwrap();
        std::os::unix::fs::symlink(other.path().join("q"), dir(t.path(), "q")).unwrap();
        assert!(!prepare(t.path(), "q"));
        let g = file(t.path(), "q", "s");
        assert_eq!(read(&g), None);
        LiveRows::create(&g, "epoch,loss").append("5,5");
        clear(&g);
        assert_eq!(
            std::fs::read(other.path().join("q/s.csv")).unwrap(),
            b"epoch,loss\n1,2\n"
        );
    }

    #[test]
    fn a_folder_at_the_live_file_is_no_file() {
        let (_t, f) = live_dir();
        std::fs::create_dir(&f).unwrap();
        assert_eq!(read(&f), None);
        let mut w = LiveRows::create(&f, "h");
        w.append("1");
        assert_eq!(w.rows(), 0);
    }
}
