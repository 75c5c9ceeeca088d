//! Bounds on what a pipeline file may make, checked before anything is expanded: a file that
//! would take minutes or all memory to read is refused with an error that says which bound it
//! crosses and what would be right, never by an abort.
//!
//! serde_yaml expands every alias (`*name`) into a copy of its anchor's content as it
//! deserializes, so a small file can stand for billions of values. [`check`] walks the
//! document once with a visitor that keeps nothing and counts what it is shown (aliases
//! included) and how deep it is, and stops at the first bound it crosses.

use crate::diagnostic::Diagnostic;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::path::Path;

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Crossed {
    Nodes,
    Depth,
}

struct Count<'a> {
    nodes: &'a Cell<usize>,
    crossed: &'a Cell<Option<Crossed>>,
    depth: usize,
}

impl Count<'_> {
    fn bump<E: de::Error>(&self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > MAX_NODES {
            self.crossed.set(Some(Crossed::Nodes));
            return Err(E::custom("seqpipe: too many values"));
        }
        Ok(())
    }

    fn child<E: de::Error>(&self) -> Result<Count<'_>, E> {
        if self.depth >= MAX_DEPTH {
            self.crossed.set(Some(Crossed::Depth));
            return Err(E::custom("seqpipe: nested too deeply"));
        }
        Ok(Count {
            nodes: self.nodes,
            crossed: self.crossed,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! leaf {
    ($($f:ident: $t:ty),*) => {
        $(fn $f<E: de::Error>(self, _: $t) -> Result<(), E> {
            self.bump()
        })*
    };
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128, visit_u128: u128,
          visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.bump::<A::Error>()?;
        while seq.next_element_seed(self.child::<A::Error>()?)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.bump::<A::Error>()?;
        while map.next_key_seed(self.child::<A::Error>()?)?.is_some() {
            map.next_value_seed(self.child::<A::Error>()?)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag value`): the tag, then the value.
        use de::VariantAccess;
        let (_, variant) = data.variant_seed(self.child::<A::Error>()?)?;
        variant.newtype_variant_seed(self.child::<A::Error>()?)
    }
}

/// Refuse a file whose values, aliases expanded, would cross [`MAX_NODES`] or which nests
/// deeper than [`MAX_DEPTH`]; stops as soon as a bound is crossed. Other problems (syntax) are
/// left to the parse that follows, which reports them with their place.
// A diagnostic is the one error of this check, made once per file: its size does not matter.
#[allow(clippy::result_large_err)]
pub fn check(path: &Path, text: &str) -> Result<(), Diagnostic> {
    let nodes = Cell::new(0);
    let crossed = Cell::new(None);
    let seed = Count {
        nodes: &nodes,
        crossed: &crossed,
        depth: 0,
    };
    let Err(e) = seed.deserialize(serde_yaml::Deserializer::from_str(text)) else {
        return Ok(());
    };
    let Some(what) = crossed.get() else {
        return Ok(());
    };
    let aliases = text.contains('*') && text.contains('&');
    let mut d = match what {
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
    };
    if let Some(loc) = e.location() {
        d = d.at(loc.line(), loc.column());
    }
    Err(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aliases_as_their_expansion() {
        let p = Path::new("t.yaml");
        // 1,000 × 1,000 × 3 values from a file of a few kilobytes.
        let mut text = String::from("a: &a [");
        text.push_str(&vec!["1"; 1000].join(", "));
        text.push_str("]\nb: &b [");
        text.push_str(&vec!["*a"; 1000].join(", "));
        text.push_str("]\nc: [*b, *b, *b]\n");
        let d = check(p, &text).unwrap_err();
        assert!(d.message.contains("aliases"), "{d}");
        assert!(d.line.is_some(), "{d}");
        // The same structure, small enough.
        assert!(check(p, "a: &a [1, 2]\nb: [*a, *a]\n").is_ok());
    }

    #[test]
    fn refuses_deep_nesting_with_a_place() {
        let p = Path::new("t.yaml");
        let text = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        let d = check(p, &text).unwrap_err();
        assert!(d.message.contains("nested more than 64"), "{d}");
        assert_eq!(d.line, Some(1));
        assert!(check(p, &format!("a: {}{}\n", "[".repeat(20), "]".repeat(20))).is_ok());
    }

    #[test]
    fn leaves_syntax_errors_to_the_parser() {
        assert!(check(Path::new("t.yaml"), "a: [1, 2\n").is_ok());
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0u64), "0");
        assert_eq!(thousands(1000u64), "1,000");
        assert_eq!(thousands(10_000_000_000u64), "10,000,000,000");
    }
}
