//! Reading a pipeline file: YAML text → a serde mirror of the file (unknown fields rejected) →
//! [`RawPipeline`], plain Rust values with source positions. This module is the only code that
//! knows about YAML (serde_yaml); swapping the parser touches nothing outside it.
//!
//! The second step, checking the mirror against the stage kinds and building a pipeline that
//! cannot hold a dangling reference, is [`crate::pipeline`].

mod locator;
mod raw;

pub use locator::Locator;
pub use raw::{RawExecutor, RawPipeline, RawStage};

use crate::diagnostic::{Diagnostic, PipelineError};
use std::path::Path;

/// Read and parse a pipeline file. YAML syntax errors and unknown fields come back as
/// diagnostics with a line and column.
pub fn load(path: &Path) -> Result<RawPipeline, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError {
        diagnostics: vec![
            Diagnostic::new(path, "", format!("cannot read pipeline file: {e}"))
                .with_help("pass the path of a .yaml file, e.g. `pipelines/ex8_2_2.yaml`"),
        ],
    })?;
    parse(path, &text)
}

/// Parse pipeline text (`path` is used for messages only).
pub fn parse(path: &Path, text: &str) -> Result<RawPipeline, PipelineError> {
    raw::parse(path, text)
}

/// Parse a `--set` override value with YAML typing rules: `1e-3` is a float, `10` an integer,
/// `true` a bool, `[1, 2]` a list, anything else a string.
pub fn parse_scalar(text: &str) -> Result<serde_json::Value, String> {
    let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(word) = raw::non_finite(&v) {
        return Err(format!("`{word}` is not a finite number"));
    }
    let v = if v.is_null() && !text.trim().is_empty() && text.trim() != "null" && text.trim() != "~"
    {
        serde_yaml::Value::String(text.to_string())
    } else {
        v
    };
    serde_json::to_value(&v).map_err(|e| e.to_string())
}
