//! Reading a pipeline file: YAML text → one parse into a tree with positions ([`tree`], the only
//! code that knows the YAML library) → the spec types ([`spec`], which also give the JSON
//! Schema) → [`RawPipeline`], plain Rust values with source positions.
//!
//! The second step, checking the mirror against the stage kinds and building a pipeline that
//! cannot hold a dangling reference, is [`crate::pipeline`].

pub mod de;
pub mod limits;
mod locator;
mod raw;
pub mod spec;
pub mod tree;

pub use locator::Locator;
pub use raw::{RawExecutor, RawPipeline, RawStage};

use crate::diagnostic::{Diagnostic, PipelineError};
use std::path::Path;

/// Read and parse a pipeline file. YAML syntax errors and unknown fields come back as
/// diagnostics with a line and column.
pub fn load(path: &Path) -> Result<RawPipeline, PipelineError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| PipelineError {
        diagnostics: vec![
            Diagnostic::new(path, "", format!("cannot read pipeline file: {e}"))
                .with_help("pass the path of a .yaml file, e.g. `pipelines/ex8_2_2.yaml`"),
        ],
    };
    // Read at most one byte past the limit: a huge file (or an endless one, like a device)
    // is refused without being read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limits::MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > limits::MAX_FILE_BYTES {
        let len = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(PipelineError {
            diagnostics: vec![limits::too_large(path, len.max(bytes.len() as u64))],
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        cannot(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stream did not contain valid UTF-8 ({})", e.utf8_error()),
        ))
    })?;
    parse(path, &text)
}

/// Parse pipeline text (`path` is used for messages only).
pub fn parse(path: &Path, text: &str) -> Result<RawPipeline, PipelineError> {
    let fail = |d| PipelineError {
        diagnostics: vec![d],
    };
    if text.len() as u64 > limits::MAX_FILE_BYTES {
        return Err(fail(limits::too_large(path, text.len() as u64)));
    }
    raw::parse(path, text)
}

/// Parse a `--set` override value with YAML typing rules: `1e-3` is a float, `10` an integer,
/// `true` a bool, `[1, 2]` a list, anything else a string.
pub fn parse_scalar(text: &str) -> Result<serde_json::Value, String> {
    let node = match tree::parse(text) {
        Ok(n) => n,
        Err(tree::ParseError::Syntax { message, .. }) => return Err(message),
        Err(tree::ParseError::Limit { .. }) => return Err("the value is too large".into()),
    };
    if let Some(word) = node.non_finite() {
        return Err(format!("`{word}` is not a finite number"));
    }
    let t = text.trim();
    if node.value == tree::Value::Null && !t.is_empty() && t != "null" && t != "~" {
        return Ok(serde_json::Value::String(text.to_string()));
    }
    Ok(node.into_json())
}
