//! Source positions for key paths: a dotted key path (`stages.vocab.params.min_freq`) → the line
//! and column where that key is written, read off the parsed tree ([`super::tree`]), so block
//! and flow mappings, quoting and comments are the parser's business, not this file's.

use super::tree::{Node, Pos, Value};
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Paths are kept as 64-bit hashes: a pipeline of 100,000 stages has 400,000 keys, and a string
/// each would be most of the cost of reading it. A collision could only misplace a message.
type Index = HashMap<u64, Pos, foldhash::fast::FixedState>;

fn hash(path: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x5e9_7195).hash_one(path)
}

#[derive(Debug, Clone, Default)]
pub struct Locator {
    positions: Index,
    /// Where a key written twice under the same parent appears the second time.
    repeats: Index,
    /// Key paths whose value comes from a `--set` (path → the `--set` as given).
    overrides: HashMap<String, String>,
}

impl Locator {
    /// Index every key of `root`. List items add no path segment: a key inside a list item is
    /// found under the list's own path.
    pub fn of(root: &Node) -> Self {
        let mut l = Locator::default();
        let mut path = String::new();
        l.index(root, &mut path);
        l
    }

    fn index(&mut self, node: &Node, path: &mut String) {
        match &node.value {
            Value::Map(entries) => {
                for e in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&e.key.text);
                    let h = hash(path);
                    match self.positions.entry(h) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            self.repeats.entry(h).or_insert(e.key.at);
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(e.key.at);
                        }
                    }
                    self.index(&e.value, path);
                    path.truncate(len);
                }
            }
            Value::Seq(items) => {
                for i in items {
                    self.index(i, path);
                }
            }
            _ => {}
        }
    }

    /// Where `path` is written a second time, if it is.
    pub fn repeat(&self, path: &str) -> Option<Pos> {
        self.repeats.get(&hash(path)).copied()
    }

    /// The value at `path` comes from `--set {set}`, not from the file.
    pub fn set_by(&mut self, path: &str, set: &str) {
        self.overrides.insert(path.to_string(), set.to_string());
    }

    /// The `--set` that gave the value at `path` or at one of its parents, if one did.
    pub fn override_of(&self, path: &str) -> Option<&str> {
        let mut p = path;
        loop {
            if let Some(s) = self.overrides.get(p) {
                return Some(s);
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// (line, column), both 1-based, of the key at `path`; the nearest written parent otherwise.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(&hash(p)) {
                return Some(*pos);
            }
            p = &p[..p.rfind('.')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_block_and_flow_keys_and_falls_back_to_parents() {
        let text = "name: x\nstages:\n  a:\n    kind: k\n    params: { n: 1, m: \"}\" }\n  b: { kind: j }\n";
        let l = Locator::of(&super::super::tree::parse(text).unwrap());
        assert_eq!(l.find("stages.a.kind"), Some((4, 5)));
        assert_eq!(l.find("stages.a.params.m"), Some((5, 21)));
        assert_eq!(l.find("stages.b.kind"), Some((6, 8)));
        assert_eq!(l.find("stages.a.params.zzz"), Some((5, 5)));
        assert_eq!(l.find("nothing"), None);
    }

    #[test]
    fn remembers_the_second_place_of_a_repeated_key() {
        let l = Locator::of(&super::super::tree::parse("s:\n  a: 1\n  a: 2\n").unwrap());
        assert_eq!(l.find("s.a"), Some((2, 3)));
        assert_eq!(l.repeat("s.a"), Some((3, 3)));
    }
}
