//! Bounds on what a pipeline file may make, checked before anything is expanded: a file that
//! would take minutes or all memory to read is refused with an error that says which bound it
//! crosses and what would be right, never by an abort.
//!
//! An alias (`*name`) stands for a copy of its anchor's content, so a small file can stand for
//! billions of values. The one parse ([`super::tree`]) counts every value as it builds the tree,
//! aliases expanded, and tracks how deep it is; it stops at the first bound crossed, and
//! [`crossed`] says which.

use crate::diagnostic::Diagnostic;
use std::path::Path;

/// Which bound a file crossed while its tree was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossed {
    Nodes,
    Depth,
}

/// The largest pipeline file read. A written-out pipeline of 100,000 stages with long names
/// (`scripts/bench-plan.sh`) is about 9 MB.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most values (mapping keys, values and list items) the file may stand for once its
/// aliases are expanded: 100,000 written-out stages are about 800,000.
pub const MAX_NODES: usize = 2_000_000;
/// The deepest nesting of mappings and lists. A pipeline needs about 6.
pub const MAX_DEPTH: usize = 64;
/// The most stages a pipeline may have once its `matrix:` sweeps are expanded.
pub const MAX_STAGES: u64 = 200_000;

/// `1234567` → `1,234,567`.
pub fn thousands(n: impl Into<u128>) -> String {
    let s = n.into().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The file is too large to read (`len` bytes).
pub fn too_large(path: &Path, len: u64) -> Diagnostic {
    Diagnostic::new(
        path,
        "",
        format!(
            "the pipeline file is {} bytes; the limit is {} bytes ({} MiB)",
            thousands(len),
            thousands(MAX_FILE_BYTES),
            MAX_FILE_BYTES >> 20
        ),
    )
    .with_help(
        "a pipeline file names stages and their params; use a `matrix:` to sweep values \
         instead of writing each stage out, and keep data in the files that stages read",
    )
}

/// The diagnostic for a file that crossed a bound while it was parsed; `aliases`: the file uses
/// them (they are then what made it so large).
pub fn crossed(path: &Path, what: Crossed, aliases: bool) -> Diagnostic {
    match what {
        Crossed::Nodes if aliases => Diagnostic::new(
            path,
            "",
            format!(
                "the file stands for more than {} values once its aliases (`*name`) are expanded, \
                 the most a pipeline file may hold",
                thousands(MAX_NODES as u64)
            ),
        )
        .with_help(
            "each use of an alias repeats its anchor's whole content: use fewer aliases, or \
             anchor smaller parts",
        ),
        Crossed::Nodes => Diagnostic::new(
            path,
            "",
            format!(
                "the file has more than {} values (keys, values and list items), the most a \
                 pipeline file may hold",
                thousands(MAX_NODES as u64)
            ),
        )
        .with_help("use a `matrix:` to sweep values instead of writing each stage out"),
        Crossed::Depth => Diagnostic::new(
            path,
            "",
            format!("mappings and lists are nested more than {MAX_DEPTH} deep"),
        )
        .with_help(format!(
            "a pipeline nests about 6 deep (stages → stage → params → value); the limit is {MAX_DEPTH}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0u64), "0");
        assert_eq!(thousands(1000u64), "1,000");
        assert_eq!(thousands(10_000_000_000u64), "10,000,000,000");
    }
}
