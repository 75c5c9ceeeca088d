//! Progress output: indicatif bars on a terminal, plain lines otherwise (CI logs, pipes).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the executor and stages print.
#[derive(Clone)]
pub struct Output {
    multi: Option<MultiProgress>,
    quiet: bool,
    /// Plain lines: also a line whenever this long has passed since the last one (a job's log,
    /// which the driver of `--executor process` relays), not only at every tenth.
    heartbeat: Option<Duration>,
}

impl Output {
    /// Bars if stderr is a terminal, plain lines otherwise.
    pub fn detect(quiet: bool) -> Self {
        let multi = if std::io::stderr().is_terminal() && !quiet {
            Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            None
        };
        Output {
            multi,
            quiet,
            heartbeat: None,
        }
    }

    /// Plain lines into a job's log: at every tenth of the way and at least every `every`
    /// while a stage advances, so that a driver reading the log can show progress.
    pub fn job_log(every: Duration) -> Self {
        Output {
            multi: None,
            quiet: false,
            heartbeat: Some(every),
        }
    }

    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => println!("{line}"),
        }
    }

    pub fn stage(&self, name: &str) -> StageProgress {
        StageProgress {
            out: self.clone(),
            name: name.to_string(),
            state: Arc::new(Mutex::new(BarState::default())),
        }
    }
}

#[derive(Default)]
struct BarState {
    bar: Option<ProgressBar>,
    len: u64,
    pos: u64,
    unit: String,
    last_decile: u64,
    /// When the last plain progress line was printed.
    last_line: Option<Instant>,
    message: String,
}

/// A stage's progress: `start(len)`, `inc`, `set_message`. On a terminal it is a bar; otherwise
/// a plain line at every tenth of the way.
#[derive(Clone)]
pub struct StageProgress {
    out: Output,
    name: String,
    state: Arc<Mutex<BarState>>,
}

impl StageProgress {
    pub fn start(&self, len: u64, unit: &str) {
        let mut s = self.state.lock().unwrap();
        s.len = len;
        s.pos = 0;
        s.unit = unit.to_string();
        s.last_decile = 0;
        s.last_line = None;
        if let Some(m) = &self.out.multi {
            let bar = m.add(ProgressBar::new(len));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_prefix(self.name.clone());
            s.bar = Some(bar);
        }
    }

    pub fn inc(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.pos += n;
        if let Some(b) = &s.bar {
            b.inc(n);
        } else if s.len > 0 && !self.out.quiet {
            let decile = s.pos * 10 / s.len;
            let due = self.out.heartbeat.is_some_and(|h| {
                s.last_line.is_none_or(|t| t.elapsed() >= h) && s.pos > 0 && s.pos < s.len
            });
            if decile > s.last_decile || due {
                s.last_decile = decile;
                s.last_line = Some(Instant::now());
                println!(
                    "  [{}] {}/{} {} {}",
                    self.name, s.pos, s.len, s.unit, s.message
                );
            }
        }
    }

    pub fn set_message(&self, msg: &str) {
        let mut s = self.state.lock().unwrap();
        s.message = msg.to_string();
        if let Some(b) = &s.bar {
            b.set_message(msg.to_string());
        }
    }

    pub fn println(&self, line: &str) {
        self.out.println(line);
    }

    pub fn finish(&self) {
        let mut s = self.state.lock().unwrap();
        if let Some(b) = s.bar.take() {
            b.finish_and_clear();
            if let Some(m) = &self.out.multi {
                m.remove(&b);
            }
        }
    }
}
