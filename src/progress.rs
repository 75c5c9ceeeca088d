//! Progress output: indicatif bars on a terminal, plain lines otherwise (CI logs, pipes).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// Where the executor and stages print.
#[derive(Clone)]
pub struct Output {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Output {
    /// Bars if stderr is a terminal, plain lines otherwise.
    pub fn detect(quiet: bool) -> Self {
        let multi = if std::io::stderr().is_terminal() && !quiet {
            Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            None
        };
        Output { multi, quiet }
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
            if decile > s.last_decile {
                s.last_decile = decile;
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
