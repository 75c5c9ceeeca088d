//! Errors in a pipeline file: what is wrong, where (file, line, column, key path) and what
//! would be right. Every problem found in one pass is reported together.

use std::fmt;
use std::path::PathBuf;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted key path inside the file, e.g. `stages.vocab.params.min_freq`.
    pub path: String,
    pub message: String,
    /// What would be right ("did you mean ...", the valid values).
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(
        file: impl Into<PathBuf>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        write!(f, "  --> {}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if !self.path.is_empty() {
            write!(f, " (at `{}`)", self.path)?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  = help: {h}")?;
        }
        Ok(())
    }
}

/// A pipeline file that cannot be run. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub struct PipelineError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        let n = self.diagnostics.len();
        // "in pipeline file" only where one is at fault (not for a flag's value alone).
        let in_file = self.diagnostics.iter().any(|d| {
            d.file
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml")
        });
        write!(
            f,
            "{n} error{}{}",
            if n == 1 { "" } else { "s" },
            if in_file { " in pipeline file" } else { "" }
        )
    }
}

/// "did you mean `x`?" for a misspelled name, if a candidate is close enough.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(given, c);
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

/// A help line: a suggestion if one is close, and always the valid choices.
pub fn suggest(given: &str, candidates: &[&str], what: &str) -> String {
    // A pipeline may have thousands of stages: name the first few, count the rest.
    const SHOWN: usize = 40;
    let mut list = candidates
        .iter()
        .take(SHOWN)
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if candidates.len() > SHOWN {
        list.push_str(&format!(" and {} more", candidates.len() - SHOWN));
    }
    match did_you_mean(given, candidates.iter().copied()) {
        Some(s) => format!("{s} valid {what}: {list}"),
        None if candidates.is_empty() => format!("this kind takes no {what}"),
        None => format!("valid {what}: {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("min_frq", ["min_freq", "reserved"]).as_deref(),
            Some("did you mean `min_freq`?")
        );
        assert_eq!(did_you_mean("zzz", ["min_freq", "reserved"]), None);
        assert_eq!(
            did_you_mean("tokenise", ["tokenize", "load_corpus"]).as_deref(),
            Some("did you mean `tokenize`?")
        );
    }
}
